"""The compile-ckpt command: inspect (strict, bounded JSON), clean (every state dict, either
format, in place), exit codes and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from compile_ckpt import load_checkpoint, save_checkpoint
from compile_ckpt.cli import build_parser, main
from conftest import compiled


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "compile_ckpt", *args], capture_output=True, text=True
    )


def test_inspect_lists_every_state_dict_and_its_wrapper_segments(tmp_path, small_model, capsys):
    path = tmp_path / "seed.pt"
    m = small_model()
    m.cnn_layers = compiled(m.cnn_layers)
    torch.save({"model_state_dict": compiled(m).state_dict(),
                "ema": compiled(small_model(1)).state_dict(),
                "optimizer": {"state": {}, "param_groups": []}}, path)
    assert main(["inspect", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert list(info["state_dicts"]) == ["model_state_dict", "ema"]
    model = info["state_dicts"]["model_state_dict"]
    n = len(small_model().state_dict())
    assert model["tensors"] == n and model["dtypes"] == {"float32": n}
    inner = sum(k.startswith("cnn_layers.") for k in small_model().state_dict())
    assert model["wrapper_segments"] == {"_orig_mod": n + inner}  # twice in the submodule's keys
    assert info["state_dicts"]["ema"]["wrapper_segments"] == {"_orig_mod": n}
    assert info["optimizer_state"] is True and info["scheduler_state"] is False


def test_clean_cleans_every_state_dict_and_the_optimizer_names(tmp_path, small_model, capsys):
    src, out = tmp_path / "seed.pt", tmp_path / "clean.pt"
    model = compiled(small_model())
    opt = torch.optim.AdamW(model.named_parameters())
    torch.save({"model": model.state_dict(), "ema": compiled(small_model(1)).state_dict(),
                "optimizer": opt.state_dict(), "epoch": 4}, src)
    assert main(["clean", str(src), str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "[model] 12 keys renamed" in text and "[ema] 12 keys renamed" in text
    assert text.splitlines()[-1] == "dry run: nothing written" and not out.exists()
    assert main(["clean", str(src), str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"wrote {out}: everything")
    obj = torch.load(out, weights_only=True)
    assert obj["epoch"] == 4
    for name in ("model", "ema"):
        small_model(2).load_state_dict(obj[name])  # plain PyTorch loads both now
    names = obj["optimizer"]["param_groups"][0]["param_names"]
    assert names == [n for n, _ in small_model().named_parameters()]


def test_version_names_the_library_and_torch(capsys):
    import compile_ckpt

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == (f"compile-ckpt {compile_ckpt.__version__} (torch "
                                               f"{torch.__version__})")


@pytest.mark.slow
def test_clean_keeps_the_format_its_suffix_names(tmp_path, small_model):
    from safetensors.torch import load_file, save_file

    path = tmp_path / "m.safetensors"
    save_file(
        {k: v.contiguous() for k, v in compiled(small_model()).state_dict().items()}, str(path)
    )
    r = run("clean", str(path), str(path))  # in place
    assert r.returncode == 0, r.stderr
    assert set(load_file(str(path))) == set(small_model().state_dict())  # safetensors reads it
    single = save_checkpoint(tmp_path / "single.pt", compiled(small_model(1)))
    r = run("clean", str(single), str(tmp_path / "one.safetensors"))
    assert r.returncode == 0, r.stderr
    assert torch.equal(load_file(str(tmp_path / "one.safetensors"))["head.0.weight"],
                       small_model(1).head[0].weight)
    both = tmp_path / "both.pt"
    torch.save({"model": small_model().state_dict(), "ema": small_model(1).state_dict()}, both)
    r = run("clean", str(both), str(tmp_path / "two.safetensors"))
    assert r.returncode == 2 and "holds one state dict alone" in r.stderr
    assert not (tmp_path / "two.safetensors").exists()


@pytest.mark.slow
def test_errors_are_one_line_with_documented_exit_codes(tmp_path, small_model):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"")
    r = run("inspect", str(bad))
    assert r.returncode == 1 and "CorruptCheckpointError" in r.stderr and r.stdout == ""
    r = run("inspect", str(tmp_path / "missing.pt"))
    assert (
        r.returncode == 1 and "missing.pt" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    )
    assert run("frobnicate").returncode == 2
    assert run("clean", str(bad)).returncode == 2  # OUT missing without --dry-run
    good = save_checkpoint(tmp_path / "good.pt", small_model())
    (tmp_path / "outdir").mkdir()
    r = run("clean", str(good), str(tmp_path / "outdir"))
    assert r.returncode == 2 and "is a directory" in r.stderr and "Traceback" not in r.stderr


def test_inspect_json_is_strict_and_bounded_whatever_the_file_holds(tmp_path, small_model,
                                                                    capsys):
    extra = {"loss": float("nan"), "best": float("inf"), "history": list(range(100_000)),
             "notes": "x" * 1_000_000, "rng": torch.ones(3),
             "nested": {str(i): {"deep": [1.0] * 10} for i in range(1000)}}
    path = save_checkpoint(tmp_path / "c.pt", small_model(), extra=extra)
    assert main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    info = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert info["top_level_keys"] == ["model_state_dict", *extra] and len(text) < 100_000
    report = load_checkpoint(path, small_model(1))  # the report's extra is as bounded
    bounded = json.dumps(report.extra, allow_nan=False)
    assert len(bounded) < 100_000 and report.extra["loss"] == "nan"
    assert report.extra["rng"] == "tensor float32 [3]"


def test_help_is_plain_text():
    text = build_parser().format_help()
    assert "``" not in text and "compile-ckpt: inspect checkpoints" in text


def test_a_full_disk_is_one_line(tmp_path, small_model):
    """clean onto a device with no room: exit 1, one line, the target untouched."""
    good = save_checkpoint(tmp_path / "good.pt", torch.nn.Linear(300, 300))
    script = (
        "import sys, torch; from compile_ckpt.cli import main\n"
        "def full(*a, **k):\n"
        "    raise RuntimeError('[enforce fail at inline_container.cc:672] . unexpected pos')\n"
        "torch.save = full\nsys.exit(main(sys.argv[1:]))"
    )
    r = subprocess.run(
        [sys.executable, "-c", script, "clean", str(good), str(tmp_path / "out.pt")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "CheckpointWriteError" in r.stderr and "unchanged" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "out.pt").exists()
