"""The compile-ckpt command: inspect, clean (every container, every format, in place), exit
codes, one-line errors, strict and bounded --json, and bench."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from compile_ckpt import load_checkpoint, save_checkpoint
from compile_ckpt.cli import JSON_LIMIT, main
from conftest import compiled


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "compile_ckpt", *args], capture_output=True, text=True
    )


def test_inspect_lists_every_state_dict_and_its_wrapper_segments(tmp_path, small_model, capsys):
    path = tmp_path / "seed.pt"
    m = small_model()
    m.cnn_layers = compiled(m.cnn_layers)
    torch.save(
        {
            "model_state_dict": compiled(m).state_dict(),
            "ema": compiled(small_model(1)).state_dict(),
            "optimizer": {"state": {}, "param_groups": []},
        },
        path,
    )
    assert main(["inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert list(info["state_dicts"]) == ["model_state_dict", "ema"]
    model = info["state_dicts"]["model_state_dict"]
    assert model["tensors"] == len(small_model().state_dict()) and model["dtypes"] == {
        "float32": model["tensors"]
    }
    assert model["wrapper_segments"]["_orig_mod"]["at_depths"] == [0, 2]
    assert info["optimizer_state"] is True and info["checksums"] is False


def test_clean_cleans_every_container(tmp_path, small_model, capsys):
    src, out = tmp_path / "seed.pt", tmp_path / "clean.pt"
    torch.save(
        {
            "model": compiled(small_model()).state_dict(),
            "ema": compiled(small_model(1)).state_dict(),
            "epoch": 4,
        },
        src,
    )
    assert main(["clean", str(src), str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert (
        "[model] 12 keys renamed" in text and "[ema] 12 keys renamed" in text and not out.exists()
    )
    # what would be written, and that nothing was (before, the two runs printed the same text)
    assert text.splitlines()[-1] == (f"dry run: nothing written; {out} would hold everything "
                                     f"{src} holds (model, ema, epoch), its 2 state dict(s) "
                                     "cleaned")
    assert main(["clean", str(src), str(out)]) == 0
    said = capsys.readouterr().out.splitlines()[-1]
    assert said.startswith(f"wrote {out} (") and said.endswith(
        f"KiB): everything {src} holds (model, ema, epoch), its 2 state dict(s) cleaned")
    obj = torch.load(out, weights_only=True)
    assert obj["epoch"] == 4
    for name in ("model", "ema"):
        small_model(2).load_state_dict(obj[name])  # plain PyTorch loads both now


def test_key_writes_that_state_dict_alone_in_either_format(tmp_path, small_model, capsys):
    """Before, `--key ema` with a .pt OUT was silently ignored: the file held both."""
    src = tmp_path / "both.pt"
    torch.save({"model": compiled(small_model()).state_dict(),
                "ema": compiled(small_model(1)).state_dict(), "epoch": 4}, src)
    for out in (tmp_path / "ema.pt", tmp_path / "ema.safetensors"):
        assert main(["clean", str(src), str(out), "--key", "ema"]) == 0
        assert capsys.readouterr().out.splitlines()[-1].endswith(
            "the state dict 'ema' alone, saved by save_checkpoint; left out: ['model', 'epoch']")
        fresh = small_model(2)
        report = load_checkpoint(out, fresh)
        assert report.ok and report.container == "model_state_dict"
        assert torch.equal(fresh.head[0].weight, small_model(1).head[0].weight)  # the EMA's
    assert set(torch.load(tmp_path / "ema.pt", weights_only=True)) == {
        "format", "model_state_dict", "metadata", "checksums", "sha256"}
    assert main(["clean", str(src), str(tmp_path / "x.pt"), "--key", "emma"]) == 2
    assert "--key emma: " in capsys.readouterr().err and not (tmp_path / "x.pt").exists()


def test_version_names_the_library_and_torch(capsys):
    import compile_ckpt

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == (f"compile-ckpt {compile_ckpt.__version__} (torch "
                                               f"{torch.__version__})")


@pytest.mark.slow
def test_clean_in_place_keeps_the_format_its_suffix_names(tmp_path, small_model):
    from safetensors.torch import load_file, save_file

    path = tmp_path / "m.safetensors"
    save_file(
        {k: v.contiguous() for k, v in compiled(small_model()).state_dict().items()}, str(path)
    )
    r = run("clean", str(path), str(path))
    assert r.returncode == 0, r.stderr
    tensors = load_file(str(path))  # safetensors reads it: it is one
    assert set(tensors) == set(small_model().state_dict())
    both = tmp_path / "both.pt"
    torch.save({"model": small_model().state_dict(), "ema": small_model(1).state_dict()}, both)
    r = run("clean", str(both), str(tmp_path / "one.safetensors"))
    assert r.returncode == 2 and "holds one state dict" in r.stderr and "--key" in r.stderr
    r = run("clean", str(both), str(tmp_path / "one.safetensors"), "--key", "ema")
    # said, not silent
    assert r.returncode == 0 and r.stdout.strip().endswith(
        "the state dict 'ema' alone, saved by save_checkpoint; left out: ['model']")
    assert torch.equal(
        load_file(str(tmp_path / "one.safetensors"))["head.0.weight"], small_model(1).head[0].weight
    )


@pytest.mark.slow
def test_errors_are_one_line_with_documented_exit_codes(tmp_path, small_model):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"")
    r = run("inspect", str(bad), "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["error"] == "CorruptCheckpointError"
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
    if not torch.cuda.is_available():
        r = run("bench", "--device", "cuda", "--out", str(tmp_path / "b"))
        assert (
            r.returncode == 2
            and "no CUDA GPU" in r.stderr
            and len(r.stderr.strip().splitlines()) == 1
        )
    r = run("bench", "--profile", "huge", "--out", str(tmp_path / "b"))
    assert r.returncode == 2 and "cpu-smoke" in r.stderr


def test_json_is_strict_and_bounded_whatever_the_metadata(tmp_path, small_model, capsys):
    path = save_checkpoint(
        tmp_path / "c.pt",
        small_model(),
        metadata={
            "loss": float("nan"),
            "best": float("inf"),
            "history": list(range(100_000)),
            "notes": "x" * 1_000_000,
            "rng": torch.ones(3),
            "nested": {str(i): {"deep": [1.0] * 10} for i in range(1000)},
        },
    )
    assert main(["inspect", str(path), "--json"]) == 0
    text = capsys.readouterr().out
    info = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert (
        len(text) <= JSON_LIMIT
        and info["metadata"]["loss"] == "nan"
        and info["metadata"]["rng"]["tensor"] == [3]
    )


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
    assert r.returncode == 1 and "CheckpointWriteError" in r.stderr and "bytes free" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "out.pt").exists()


@pytest.mark.slow
def test_bench_in_process_and_cut_short(tmp_path):
    ok = run(
        "bench",
        "--workload",
        "seed",
        "--profile",
        "cpu-smoke",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "b"),
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert (
        "default" in ok.stdout
        and (tmp_path / "b" / "bench.csv").exists()
        and "95% interval" in ok.stdout
    )
    short = run(
        "bench",
        "--workload",
        "gpt",
        "--profile",
        "cpu-smoke",
        "--cold-warm",
        "--budget-s",
        "1",
        "--out",
        str(tmp_path / "c"),
    )
    assert short.returncode == 1
    assert "incomplete: cold route stopped after" in short.stderr
    assert (
        json.loads((tmp_path / "c" / "bench.json").read_text())["environment"]["complete"] is False
    )
