"""The library under attack: loads racing saves see whole files; all or nothing, with every
check before the first write; what is written reads back with a safe load, or is refused before
writing; every failure a named error."""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path

import pytest
import torch
from safetensors import torch as safetensors_torch
from torch import nn

import compile_ckpt.formats
from compile_ckpt import (
    CheckpointCollisionError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    CheckpointReadError,
    CheckpointWriteError,
    CorruptCheckpointError,
    UnsafeCheckpointError,
    UnsupportedContentError,
    from_checkpoint,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from compile_ckpt.cli import main
from conftest import same_state, state_of

FORMATS = [".pt", ".safetensors"]


class Tied(nn.Module):
    """A head tied to its embedding, as in GPT-2."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.mid = nn.Linear(4, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.mid(self.emb(x)))


def _filled(value: float) -> nn.Module:
    m = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 64))
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(value)
    return m


# ------------------------------------------------------- 1. loads racing real saves
def _writer(path: Path, step: int) -> None:
    save_checkpoint(path, _filled(float(step)))


def _step_of(model: nn.Module) -> float | None:
    """The step whose file the model holds: every weight equal to it, else None (a mix)."""
    values = {float(v) for p in model.parameters() for v in p.flatten().tolist()}
    return values.pop() if len(values) == 1 else None


@pytest.mark.parametrize("suffix", FORMATS)
def test_loads_racing_real_saves_are_always_whole(tmp_path, suffix):
    """A thread saves step after step onto the path while the loads run: every load is one
    whole file (its weights are its own step's), never a mix and never a false "damaged". (Not
    with mmap=True: torch opens the file again, by name, to map it, so a file replaced between
    the two opens mixes, with plain torch.load(mmap=True) as here; docs/library.md says so.)"""
    path = tmp_path / f"c{suffix}"
    _writer(path, 0)
    stop = threading.Event()

    def keep_saving() -> None:
        step = 0
        while not stop.is_set():
            step += 1
            _writer(path, step)

    thread = threading.Thread(target=keep_saving)
    thread.start()
    try:
        seen = set()
        for _ in range(40):
            model = _filled(-1.0)
            load_checkpoint(path, model)
            assert (step := _step_of(model)) is not None and step >= 0
            seen.add(step)
    finally:
        stop.set()
        thread.join()
    assert len(seen) > 1  # the file really changed under the loads


def test_tied_keys_with_different_values_are_an_error(tmp_path):
    src = Tied()
    state = {k: v.clone() for k, v in src.state_dict().items()}
    state["head.weight"] += 1.0  # edited: the two names no longer agree
    path = save_checkpoint(tmp_path / "c.pt", state)
    dst = Tied()
    before = state_of(dst)
    with pytest.raises(CheckpointCollisionError, match="emb.weight.*head.weight.*tied"):
        load_checkpoint(path, dst)
    assert same_state(before, state_of(dst))
    # the same values under both names (what state_dict() of a tied model holds) load
    good = save_checkpoint(tmp_path / "good.pt", src.state_dict())
    assert load_checkpoint(good, dst).ok and torch.equal(dst.head.weight, src.emb.weight)


# ------------------------------------------------------------- 3. all or nothing
def _trained(opt_class=torch.optim.Adam, sched=None, **opt_kw):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    opt = opt_class(model.parameters(), **opt_kw)
    scheduler = sched(opt) if sched else None
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(3, 4)).sum().backward()
        opt.step()
        if scheduler:
            scheduler.step()
    return model, opt, scheduler


def _fresh(opt_class=torch.optim.Adam, sched=None, **opt_kw):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    opt = opt_class(model.parameters(), **opt_kw)
    return model, opt, (sched(opt) if sched else None)


def _step_lr(o):
    return torch.optim.lr_scheduler.StepLR(o, 5)


def _cosine(o):
    return torch.optim.lr_scheduler.CosineAnnealingLR(o, 10)


def _lambda(o):
    return torch.optim.lr_scheduler.LambdaLR(o, lambda e: 0.9**e)


@pytest.mark.parametrize("other", [_cosine, _lambda], ids=["CosineAnnealingLR", "LambdaLR"])
def test_another_schedulers_state_changes_nothing(tmp_path, other):
    model, opt, sched = _trained(sched=_step_lr)
    path = save_checkpoint(tmp_path / "c.pt", model, optimizer=opt, scheduler=sched)
    dst = _fresh(sched=other)
    before = state_of(*dst)
    with pytest.raises(CheckpointMismatchError, match="scheduler state has .*step_size"):
        load_checkpoint(path, dst[0], optimizer=dst[1], scheduler=dst[2])
    assert same_state(before, state_of(*dst))


def test_adam_state_into_sgd_with_momentum_is_refused_before_any_write(tmp_path):
    model, opt, _ = _trained()
    path = save_checkpoint(tmp_path / "c.pt", model, optimizer=opt)
    dst = _fresh(torch.optim.SGD, lr=0.1, momentum=0.9)
    before = state_of(dst[0], dst[1])
    with pytest.raises(CheckpointMismatchError, match="lacks .*'momentum'.* SGD needs"):
        load_checkpoint(path, dst[0], optimizer=dst[1])
    assert same_state(before, state_of(dst[0], dst[1]))


class Picky(nn.Module):
    """A module whose extra state is checked by the module itself, in set_extra_state."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.mode = "fp32"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)

    def get_extra_state(self):
        return {"mode": self.mode}

    def set_extra_state(self, state) -> None:
        if state["mode"] not in ("fp32", "bf16"):
            raise ValueError(f"unknown mode {state['mode']!r}")
        self.mode = state["mode"]


def test_a_rejected_extra_state_leaves_weights_optimizer_and_scheduler_as_they_were(tmp_path):
    src = nn.Sequential(nn.Linear(4, 4), Picky())
    src[1].mode = "int3"  # a value this version of the module refuses
    opt = torch.optim.SGD(src.parameters(), lr=0.5, momentum=0.9)
    src(torch.randn(2, 4)).sum().backward()
    opt.step()
    sched = _step_lr(opt)
    path = save_checkpoint(tmp_path / "c.pt", src, optimizer=opt, scheduler=sched)
    dst = nn.Sequential(nn.Linear(4, 4), Picky())
    dst_opt = torch.optim.SGD(dst.parameters(), lr=0.1, momentum=0.9)
    dst_sched = torch.optim.lr_scheduler.StepLR(dst_opt, 7)
    before = state_of(dst, dst_opt, dst_sched)
    with pytest.raises(CheckpointMismatchError, match="module '1' refused.*unknown mode 'int3'"):
        load_checkpoint(path, dst, optimizer=dst_opt, scheduler=dst_sched)
    assert same_state(before, state_of(dst, dst_opt, dst_sched)) and dst[1].mode == "fp32"


def test_extra_state_and_ties_under_a_checkpoint_wrapper(tmp_path):
    """A wrapper whose hooks hide its segment from the keys: extra state still reaches the
    module, and a meta-built model comes back whole."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    def build() -> nn.Module:
        return nn.Sequential(checkpoint_wrapper(Picky()), Tied())

    src = build()
    src[0]._checkpoint_wrapped_module.mode = "bf16"  # the wrapper forwards reads, not writes
    path = save_checkpoint(tmp_path / "c.pt", src)
    dst = build()
    assert load_checkpoint(path, dst).ok and dst[0].mode == "bf16"
    model = from_checkpoint(path, build)
    assert model[0].mode == "bf16" and model[1].head.weight is model[1].emb.weight
    assert not any(p.is_meta for p in model.parameters())


def test_a_cast_that_changes_the_kind_of_value_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"weight": torch.ones(2, 2, dtype=torch.cfloat),
                                               "bias": torch.ones(2)})
    dst = nn.Linear(2, 2)
    before = state_of(dst)
    with pytest.raises(CheckpointMismatchError, match="weight: complex64 -> float32"):
        load_checkpoint(path, dst)
    assert same_state(before, state_of(dst))
    # a cast of the same kind is done and reported
    half = save_checkpoint(tmp_path / "h.pt", nn.Linear(2, 2).to(torch.bfloat16))
    assert load_checkpoint(half, dst).dtype_casts[0][1:] == ("bfloat16", "float32")


# ------------------------------------------- every torch.optim optimizer round-trips
class Net(nn.Module):
    """A 1-D parameter first (LBFGS keeps its flat state under the first parameter), then
    matrices and biases."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(8))
        self.inp = nn.Linear(4, 8)
        self.out = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.inp(x) * self.scale))


class Matrices(nn.Module):
    """Muon updates matrices only."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 8, bias=False)
        self.out = nn.Linear(8, 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.inp(x)))


class Lookup(nn.Module):
    """SparseAdam needs sparse gradients: an embedding with sparse=True."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(12, 4, sparse=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.emb((x.abs() * 3).long().clamp(max=11)).sum(-1)


OPTIMIZERS = sorted(n for n, c in vars(torch.optim).items() if isinstance(c, type)
                    and issubclass(c, torch.optim.Optimizer) and c is not torch.optim.Optimizer)
_SETUP = {"SGD": {"lr": 0.1, "momentum": 0.9}, "Muon": {"lr": 0.02}}


def _optimizer_run(name: str, seed: int):
    torch.manual_seed(seed)
    model = {"Muon": Matrices, "SparseAdam": Lookup}.get(name, Net)()
    opt = getattr(torch.optim, name)(model.parameters(), **_SETUP.get(name, {}))
    return model, opt


def _steps(model: nn.Module, opt: torch.optim.Optimizer, n: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(5, 4, generator=gen)

        def closure(x=x) -> torch.Tensor:
            opt.zero_grad()
            loss = model(x).pow(2).mean()
            loss.backward()
            return loss

        opt.step(closure)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_torch_optimizer_round_trips_and_resumes_exactly(tmp_path, name):
    """Train, save, load into a fresh model and optimizer, train on: the resumed run equals the
    one that never stopped, bit for bit (the library refused LBFGS's and Adafactor's own
    state before)."""
    model, opt = _optimizer_run(name, 0)
    sched = torch.optim.lr_scheduler.StepLR(opt, 2, gamma=0.5)
    for _ in range(3):
        _steps(model, opt, 1, seed=1)
        sched.step()
    path = save_checkpoint(tmp_path / "c.pt", model, optimizer=opt, scheduler=sched)
    resumed, resumed_opt = _optimizer_run(name, 5)
    resumed_sched = torch.optim.lr_scheduler.StepLR(resumed_opt, 2, gamma=0.5)
    report = load_checkpoint(path, resumed, optimizer=resumed_opt, scheduler=resumed_sched)
    assert report.optimizer_loaded and report.scheduler_loaded
    assert same_state(state_of(model, opt, sched), state_of(resumed, resumed_opt, resumed_sched))
    _steps(model, opt, 2, seed=2)
    _steps(resumed, resumed_opt, 2, seed=2)
    assert same_state(state_of(model, opt), state_of(resumed, resumed_opt))


# ------------------------------------------------------ 4. what is written reads back
def test_extra_comes_back_exactly_and_the_report_describes_it(tmp_path):
    extra = {"epoch": 3, 0: 1.5, "pair": (1, 2), "nested": {True: [None, "x"]}}
    path = save_checkpoint(tmp_path / "c.pt", nn.Linear(2, 2), extra=extra)
    back = torch.load(path, weights_only=True)  # plain torch: every key and kind as saved
    assert {k: back[k] for k in extra} == extra and isinstance(back["pair"], tuple)
    report = load_checkpoint(path, nn.Linear(2, 2)).extra  # as JSON holds it
    assert report == {"epoch": 3, "0": 1.5, "pair": (1, 2), "nested": {"True": [None, "x"]}}


@dataclasses.dataclass
class Settings:
    mode: str = "fp32"


class Holder(nn.Module):
    def __init__(self, extra: object) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.extra = extra

    def get_extra_state(self) -> object:
        return self.extra

    def set_extra_state(self, state: object) -> None:
        self.extra = state


@pytest.mark.parametrize("extra", ["numpy", "dataclass"])
def test_extra_state_a_load_would_refuse_is_refused_at_save(tmp_path, extra):
    if extra == "numpy":
        np = pytest.importorskip("numpy")
        value: object = np.arange(3)
    else:
        value = Settings()
    path = save_checkpoint(tmp_path / "c.pt", Holder({"ok": 1}))
    before = path.read_bytes()
    needs = "numpy.ndarray" if extra == "numpy" else "test_hardening.Settings"
    with pytest.raises(UnsupportedContentError,
                       match=rf"\['model_state_dict'\]\['_extra_state'\] is a {needs}, which "
                             r"torch.load\(weights_only=True\) refuses"):
        save_checkpoint(path, Holder(value))
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def _bytes(t: torch.Tensor) -> bytes:
    t = t.resolve_conj().resolve_neg().contiguous()
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


DTYPES = sorted({d for d in vars(torch).values() if isinstance(d, torch.dtype)}, key=str)


@pytest.mark.parametrize("suffix", FORMATS)
def test_every_dtype_is_kept_bit_for_bit_or_refused_as_the_format_refuses_it(tmp_path, suffix):
    kept, refused = [], []
    for dtype in DTYPES:
        try:  # random bytes, viewed as that dtype (NaNs and odd patterns included)
            x = torch.randint(0, 256, (8 * 8,), dtype=torch.uint8).view(dtype)
        except (RuntimeError, TypeError):
            continue  # torch itself cannot hold such a tensor in memory
        try:
            path = save_checkpoint(tmp_path / f"{str(dtype)[6:]}{suffix}", {"x": x})
        except (UnsupportedContentError, CheckpointWriteError) as exc:
            assert str(tmp_path) in str(exc)
            refused.append(dtype)
            continue
        back = read_checkpoint(path)
        back = back["x"] if suffix == ".safetensors" else back["model_state_dict"]["x"]
        assert back.dtype == dtype and _bytes(back) == _bytes(x), dtype
        kept.append(dtype)
    assert torch.float32 in kept and torch.bfloat16 in kept
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    for dtype in refused:  # only what the format itself refuses
        with pytest.raises(Exception):  # noqa: B017, PT011 - torch and safetensors raise several
            if suffix == ".pt":
                torch.save({"x": torch.zeros(2, dtype=dtype)}, tmp_path / "plain.pt")
            else:
                safetensors_torch.save({"x": torch.zeros(2, dtype=dtype)})


@pytest.mark.parametrize("suffix", FORMATS)
def test_conjugate_and_negative_views_are_stored_as_the_values_they_show(tmp_path, suffix):
    z = torch.tensor([1 + 2j, 3 - 1j])
    state = {"conj": z.conj(), "neg": torch.tensor([1.0, -2.0])._neg_view()}
    back = read_checkpoint(save_checkpoint(tmp_path / f"c{suffix}", state))
    back = back if suffix == ".safetensors" else back["model_state_dict"]
    assert torch.equal(back["conj"], torch.tensor([1 - 2j, 3 + 1j]))
    assert torch.equal(back["neg"], torch.tensor([-1.0, 2.0]))


class SparseBuffer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.register_buffer("mask", torch.eye(3).to_sparse())


def test_a_sparse_buffer_round_trips_in_pt_and_is_refused_by_safetensors(tmp_path):
    src = SparseBuffer()
    path = save_checkpoint(tmp_path / "c.pt", src)
    dst = SparseBuffer()
    dst.mask = torch.zeros(3, 3).to_sparse()
    assert load_checkpoint(path, dst).ok
    assert torch.equal(dst.mask.to_dense(), torch.eye(3))
    with pytest.raises(UnsupportedContentError, match="'mask' is a sparse or quantized tensor"):
        save_checkpoint(tmp_path / "c.safetensors", src)
    q = torch.quantize_per_tensor(torch.rand(4), 0.1, 2, torch.quint8)
    with pytest.raises(UnsupportedContentError, match="'q' is a sparse or quantized tensor"):
        save_checkpoint(tmp_path / "q.safetensors", {"q": q, "w": torch.ones(1)})
    back = read_checkpoint(save_checkpoint(tmp_path / "q.pt", {"q": q, "w": torch.ones(1)}))
    assert torch.equal(back["model_state_dict"]["q"].int_repr(), q.int_repr())


# ------------------------------------------------------------- 5. named failures
@pytest.mark.parametrize("suffix", FORMATS)
def test_an_unreadable_file_is_never_called_corrupt(tmp_path, monkeypatch, capsys, suffix):
    path = save_checkpoint(tmp_path / f"c{suffix}", nn.Linear(2, 2))

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(compile_ckpt.formats, "open", denied, raising=False)
    with pytest.raises(CheckpointReadError, match="Permission denied.*may be fine") as caught:
        load_checkpoint(path, nn.Linear(2, 2))
    assert not isinstance(caught.value, CorruptCheckpointError) and str(path) in str(caught.value)
    assert main(["inspect", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("compile-ckpt: CheckpointReadError:") and err.count("\n") == 1


def test_paths_that_cannot_be_opened_are_named_errors(tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    (tmp_path / "loop_a").symlink_to(tmp_path / "loop_b")
    (tmp_path / "loop_b").symlink_to(tmp_path / "loop_a")
    with pytest.raises(CheckpointNotFoundError, match="a folder in its path is a file"):
        read_checkpoint(tmp_path / "file" / "c.pt")
    with pytest.raises(CheckpointReadError, match="symbolic links"):
        read_checkpoint(tmp_path / "loop_a")
    for bad in (tmp_path / "file" / "c.pt", tmp_path / "loop_a"):
        with pytest.raises(CheckpointWriteError, match="is unchanged"):
            save_checkpoint(bad, nn.Linear(2, 2))


def test_a_full_disk_under_safetensors_is_a_write_error_in_the_library_and_cli(
        tmp_path, monkeypatch, capsys):
    import safetensors.torch
    from safetensors import SafetensorError

    src = save_checkpoint(tmp_path / "c.pt", nn.Linear(2, 2))
    old = save_checkpoint(tmp_path / "out.safetensors", nn.Linear(2, 2))
    before = old.read_bytes()

    def full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise SafetensorError("Error while serializing: IoError(No space left on device)")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(CheckpointWriteError, match="No space left.*unchanged"):
        save_checkpoint(old, nn.Linear(2, 2))
    assert main(["clean", str(src), str(old)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("compile-ckpt: CheckpointWriteError:") and err.count("\n") == 1
    assert old.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt", "out.safetensors"]


def test_crafted_optimizer_groups_are_named_errors():
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for groups in ([1], [{"params": 0}], [{"params": [[0]]}]):
        crafted = {"model_state_dict": model.state_dict(),
                   "optimizer_state_dict": {"state": {}, "param_groups": groups}}
        with pytest.raises(CheckpointMismatchError, match="parameter group 0"):
            load_checkpoint(crafted, model, optimizer=opt)


# ------------------------------------------------------------ 6. long names
def test_a_name_as_long_as_the_filesystem_allows_is_saved_atomically(tmp_path):
    torch.save({"a": 1}, tmp_path / ("m" * 255))  # NAME_MAX: torch.save writes such a name
    for suffix in (".pt", ".safetensors"):
        target = tmp_path / ("n" * (255 - len(suffix)) + suffix)
        save_checkpoint(target, nn.Linear(2, 2))
        assert load_checkpoint(target, nn.Linear(2, 2)).ok
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------- 7. the earlier three
def test_the_legacy_torch_save_format_is_read_safely(tmp_path):
    model = nn.Linear(3, 3)
    path = tmp_path / "old.pt"
    torch.save({"model_state_dict": model.state_dict(), "epoch": 4}, path,
               _use_new_zipfile_serialization=False)
    dst = nn.Linear(3, 3)
    assert load_checkpoint(path, dst).ok and torch.equal(dst.weight, model.weight)
    built = from_checkpoint(path, lambda: nn.Linear(3, 3))  # memory-mapping: not possible
    assert torch.equal(built.weight, model.weight)
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"x": _Payload(str(marker))}, evil, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeCheckpointError):
        read_checkpoint(evil)
    assert not marker.exists()


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("suffix", FORMATS)
def test_from_checkpoint_keeps_ties_and_the_dtype_the_model_declares(tmp_path, suffix):
    src = Tied().to(torch.bfloat16)
    path = save_checkpoint(tmp_path / f"c{suffix}", src)
    model = from_checkpoint(path, Tied)
    assert model.head.weight is model.emb.weight
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert torch.equal(model.emb.weight, src.emb.weight.float())
    assert model(torch.tensor([[1, 2]])).dtype == torch.float32
    assert len(list(model.parameters())) == len(list(Tied().parameters()))


def test_a_fifo_or_device_is_refused_without_being_opened(tmp_path):
    fifo = tmp_path / "c.pt"
    os.mkfifo(fifo)  # opening it to read would wait for a writer forever
    for path in (fifo, Path(os.devnull)):
        with pytest.raises(CheckpointReadError, match="FIFO, device or socket.*not opened"):
            read_checkpoint(path)


def test_the_cli_reports_even_an_unexpected_error_in_one_line(tmp_path, monkeypatch, capsys):
    import compile_ckpt.cli

    def broken(path):
        raise ValueError("a bug\nover two lines")

    monkeypatch.setattr(compile_ckpt.cli, "inspect_checkpoint", broken)
    assert main(["inspect", str(tmp_path / "c.pt")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unexpected ValueError: a bug over two lines" in err
