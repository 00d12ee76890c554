"""A real multi-process job (launch with ``torchrun --nproc-per-node 2 -m compile_ckpt.ddp_demo``):

1. DDP and torch.compile in every order: the keys each saves; rank 0 saves with
   ``save_checkpoint`` and a single-process eager model loads it with identical predictions;
2. a sharded save and load with ``torch.distributed.checkpoint`` (DCP), then conversion to
   one ``torch.save`` file that ``load_checkpoint`` reads;
3. a run resumed from a DCP checkpoint continues the uninterrupted loss trajectory.

gloo on CPU; NCCL when there is one GPU per process. Rank 0 writes the results as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)
from torch.nn.parallel import DistributedDataParallel as DDP

from .checkpoint import WRAPPER_SEGMENTS, load_checkpoint, save_checkpoint, unwrap_model
from .data import DataConfig, make_datasets
from .model import ModelConfig, build_model

CONFIG = ModelConfig(signal_length=32, cnn_channels=(8, 16), mlp_hidden=16, head_hidden=32, dropout=0.0)


def _batches(rank: int, world: int, n: int, batch: int, dev: torch.device) -> list[tuple[torch.Tensor, ...]]:
    data = make_datasets(CONFIG, DataConfig(pretrain=batch * world * n, final=8, val=8))["pretrain"].tensors
    out = []
    for i in range(n):
        lo = (i * world + rank) * batch
        out.append(tuple(t[lo:lo + batch].to(dev) for t in data))
    return out


def _train(model: nn.Module, opt: torch.optim.Optimizer, batches: list[tuple[torch.Tensor, ...]]) -> list[float]:
    losses = []
    for signal, tab, y in batches:
        loss = nn.functional.mse_loss(model(signal, tab), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        losses.append(mean.item() / dist.get_world_size())
    return losses


def _predict(model: nn.Module, dev: torch.device) -> torch.Tensor:
    m = unwrap_model(model).eval()
    with torch.no_grad():
        out = m(*m.example_inputs(8, device=dev)).cpu()
    m.train()
    return out


def _clean(keys: list[str]) -> bool:
    return not any(seg in k.split(".") for k in keys for seg in WRAPPER_SEGMENTS)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--compile-backend", default="inductor")
    ap.add_argument("--steps", type=int, default=4, help="steps per phase of the resume check")
    args = ap.parse_args()
    use_nccl = torch.cuda.is_available() and torch.cuda.device_count() >= int(os.environ["WORLD_SIZE"])
    dist.init_process_group("nccl" if use_nccl else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    dev = torch.device(f"cuda:{rank}") if use_nccl else torch.device("cpu")
    if use_nccl:
        torch.cuda.set_device(dev)
    comp: Callable[[nn.Module], nn.Module] = lambda m: torch.compile(m, backend=args.compile_backend)  # noqa: E731
    ids = [dev.index] if use_nccl else None
    work = Path(tempfile.mkdtemp(prefix="ddp-demo-")) if rank == 0 else None
    shared = [str(work) if work else None]
    dist.broadcast_object_list(shared, src=0)
    work = Path(shared[0])  # type: ignore[arg-type]
    batches = _batches(rank, world, 2 * args.steps, 16, dev)
    results: dict[str, Any] = {"world_size": world, "backend": dist.get_backend(), "wrappings": {}}

    def inplace(m: nn.Module) -> nn.Module:
        m.compile(backend=args.compile_backend)
        return DDP(m, device_ids=ids)

    wrappings: dict[str, Callable[[nn.Module], nn.Module]] = {
        "DDP(torch.compile(m))": lambda m: DDP(comp(m), device_ids=ids),
        "torch.compile(DDP(m))": lambda m: comp(DDP(m, device_ids=ids)),
        "DDP(m) after m.compile()": inplace,
    }
    for name, wrap in wrappings.items():  # 1. every order, rank-0 save, single-process load
        model = wrap(build_model(CONFIG, seed=0).to(dev))
        _train(model, torch.optim.AdamW(model.parameters(), lr=1e-2), batches[:2])
        path = work / f"{len(results['wrappings'])}.pt"
        if rank == 0:
            save_checkpoint(path, model, metadata={"wrapping": name})
        dist.barrier()
        entry = {"state_dict_keys": list(model.state_dict())[:2]}
        if rank == 0:
            saved = list(torch.load(path, weights_only=True)["model_state_dict"])
            single = build_model(CONFIG, seed=7).to(dev)
            report = load_checkpoint(path, single)
            entry.update(saved_keys=saved[:2], saved_keys_clean=_clean(saved), load_report=str(report),
                         predictions_identical=torch.equal(_predict(model, dev), _predict(single, dev)))
        results["wrappings"][name] = entry
        dist.barrier()

    # 2. DCP: sharded save, load into another wrapped model, convert to one file.
    model = DDP(comp(build_model(CONFIG, seed=0).to(dev)), device_ids=ids)
    _train(model, torch.optim.AdamW(model.parameters(), lr=1e-2), batches[:2])
    msd = get_model_state_dict(model)
    dcp.save(msd, checkpoint_id=str(work / "dcp"))
    other = DDP(comp(build_model(CONFIG, seed=5).to(dev)), device_ids=ids)
    target = get_model_state_dict(other)
    dcp.load(target, checkpoint_id=str(work / "dcp"))
    set_model_state_dict(other, target)
    same = all(torch.equal(a, b) for a, b in zip(unwrap_model(model).state_dict().values(),
                                                  unwrap_model(other).state_dict().values(), strict=True))
    results["dcp"] = {"get_model_state_dict_keys": list(msd)[:2], "keys_clean": _clean(list(msd)),
                      "roundtrip_identical": same}
    dist.barrier()
    if rank == 0:
        single_file = work / "from_dcp.pt"
        dcp_to_torch_save(str(work / "dcp"), str(single_file))
        plain = build_model(CONFIG, seed=9).to(dev)
        report = load_checkpoint(single_file, plain)
        results["dcp"].update(converted_loads=report.ok, converted_report=str(report),
                              converted_predictions_identical=torch.equal(_predict(model, dev),
                                                                          _predict(plain, dev)))
    dist.barrier()

    # 3. Resume from DCP: K steps, save model + optimizer, fresh set-up, K more steps.
    k = args.steps

    def fresh(seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
        m = DDP(comp(build_model(CONFIG, seed=seed).to(dev)), device_ids=ids)
        return m, torch.optim.AdamW(m.parameters(), lr=1e-2)

    ref_model, ref_opt = fresh(0)
    reference = _train(ref_model, ref_opt, batches[: 2 * k])
    first, first_opt = fresh(0)
    part1 = _train(first, first_opt, batches[:k])
    msd, osd = get_state_dict(first, first_opt)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(work / "resume"))
    second, second_opt = fresh(11)  # other initial weights: everything must come from the file
    msd2, osd2 = get_state_dict(second, second_opt)
    state = {"model": msd2, "optim": osd2}
    dcp.load(state, checkpoint_id=str(work / "resume"))
    set_state_dict(second, second_opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    part2 = _train(second, second_opt, batches[k: 2 * k])
    resumed = part1 + part2
    results["resume"] = {"reference": reference, "resumed": resumed,
                         "max_abs_diff": max(abs(a - b) for a, b in zip(reference, resumed, strict=True))}
    if rank == 0:
        Path(args.out).write_text(json.dumps(results, indent=2))
    dist.barrier()
    if rank == 0:
        shutil.rmtree(work, ignore_errors=True)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
