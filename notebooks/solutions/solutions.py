"""Reference solutions for the notebooks' exercises, labelled as in the notebooks.

``exercises.reveal("NN")`` prints one with the imports it uses: each solution stands alone
(no helper from this file), so pasted below the notebook's stub it runs. The tests run each,
so pasted, through the same check the notebook uses."""

import torch
from torch.nn.parallel import DistributedDataParallel


# Exercise 01 (01_reproduce_the_failure): a checkpoint that loads everywhere.
def portable_save(model, compiled, path):
    """Save the module you compiled: `compiled` trains `model`'s own Parameters, and `model`
    names them without the wrapper's `_orig_mod.`."""
    torch.save({"model_state_dict": model.state_dict()}, path)


# Exercise 02 (02_fix_clean_on_load): the original fix, for compiled submodules too.
def strip_compile_prefix(state_dict):
    """Drop every `_orig_mod` segment, wherever it is; whole segments only."""
    return {
        ".".join(part for part in key.split(".") if part != "_orig_mod"): value
        for key, value in state_dict.items()
    }


# Exercise 03 (03_alternatives): plain keys, whatever wraps the model (compile, a compiled
# submodule, DDP).
def portable_state_dict(model):
    """Rename, without reading the private `_orig_mod`: drop every `_orig_mod` segment (compile
    adds one wherever it wraps), and the `module` segment right after each DDP in the model."""
    ddp_paths = {
        name
        for name, module in model.named_modules()
        if isinstance(module, DistributedDataParallel)
    }
    plain = {}
    for key, value in model.state_dict().items():
        parts = key.split(".")
        kept = [
            part
            for i, part in enumerate(parts)
            if part != "_orig_mod" and not (part == "module" and ".".join(parts[:i]) in ddp_paths)
        ]
        plain[".".join(kept)] = value
    return plain


# Exercise 04 (04_pretrain_finetune_pipeline): save what a resume needs, in plain PyTorch.
def resume_save(path, model, compiled, optimizer, scheduler, epoch):
    """What the next epoch depends on, in one `torch.save`: the module you compiled (plain
    keys), the optimizer (AdamW's moments and steps), the scheduler, the RNG state (dropout)
    and the epoch, which also fixes the data order: each epoch reseeds the shuffle from it."""
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "rng": rng,
        },
        path,
    )
