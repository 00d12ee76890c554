"""Key matching: which segments wrappers put into state-dict keys, and how to take them out.

``torch.compile(model)`` returns an ``OptimizedModule`` that holds the real model as
``_orig_mod``, so its keys read ``_orig_mod.layer.weight``. DDP and DataParallel add
``module.``, ``checkpoint_wrapper`` adds ``_checkpoint_wrapped_module.`` to named parameters,
FSDP (v1) adds ``_fsdp_wrapped_module.``, and a compiled *submodule* puts ``_orig_mod`` in the
middle of a key (``encoder._orig_mod.weight``).

This file stands alone: it imports torch and the standard library only, reads no file and
keeps no state (names in, renames out). Copy it into a trainer to fix ``_orig_mod.`` there:
``cleaned, renames = clean_state_dict(state_dict, model)`` then ``model.load_state_dict(cleaned)``.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

__all__ = ["WRAPPER_SEGMENTS", "KeyCollisionError", "Rename", "canonical_fqn", "clean_keys",
           "clean_state_dict", "describe_renames", "match_keys", "segment_counts", "unwrap_model",
           "wrapper_paths"]

#: Attribute names under which wrappers keep the module they wrap.
WRAPPER_SEGMENTS: tuple[str, ...] = (
    "_orig_mod",  # torch.compile -> OptimizedModule
    "module",  # DistributedDataParallel / DataParallel
    "_checkpoint_wrapped_module",  # torch.distributed.algorithms checkpoint_wrapper
    "_fsdp_wrapped_module",  # FullyShardedDataParallel (v1)
)
#: The segments that no ordinary model uses as a submodule name; ``module`` is not one.
UNAMBIGUOUS = frozenset(WRAPPER_SEGMENTS) - {"module"}
_PARALLEL = (nn.parallel.DistributedDataParallel, nn.DataParallel)

Renames = tuple[dict[str, str], list["Rename"]]


class KeyCollisionError(ValueError):
    """Two keys would land on the same name: one tensor would silently replace another."""


def is_compiled_wrapper(module: nn.Module) -> bool:
    """Whether ``module`` is ``torch.compile``'s ``OptimizedModule`` (a private class, so it is
    recognised by what it does: a module that holds the real one as ``_orig_mod``)."""
    return type(module).__name__ == "OptimizedModule" and isinstance(
        module._modules.get("_orig_mod"), nn.Module)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module under any stack of OptimizedModule, DDP and DataParallel.

    Idempotent. Wrappers *inside* the model (a compiled submodule, a checkpoint wrapper) stay;
    their segments are taken out of the keys by :func:`canonical_fqn`.
    """
    while True:
        if is_compiled_wrapper(model):
            model = model._orig_mod
        elif isinstance(model, _PARALLEL):
            model = model.module
        else:
            return model


def wrapper_paths(model: nn.Module) -> frozenset[str]:
    """Dotted paths, inside ``model``, of every child that exists only because of a wrapper.

    ``DDP(torch.compile(m))`` gives ``{"module", "module._orig_mod"}``; a compiled submodule
    ``m.encoder`` gives ``{"encoder._orig_mod"}``. A real submodule called ``module`` is not
    listed, which is what makes :func:`canonical_fqn` exact for a live model.
    """
    found: set[str] = set()
    for name, mod in model.named_modules(remove_duplicate=False):
        prefix = f"{name}." if name else ""
        if is_compiled_wrapper(mod):
            found.add(prefix + "_orig_mod")
        if isinstance(mod, _PARALLEL):
            found.add(prefix + "module")
        for seg in ("_checkpoint_wrapped_module", "_fsdp_wrapped_module"):
            if isinstance(mod._modules.get(seg), nn.Module):
                found.add(prefix + seg)
    return frozenset(found)


def canonical_fqn(fqn: str, paths: Iterable[str] | None = None) -> str:
    """The name of a parameter or buffer with its wrapper segments removed.

    ``_orig_mod``, ``_checkpoint_wrapped_module`` and ``_fsdp_wrapped_module`` go at any depth;
    ``module`` only where ``paths`` (:func:`wrapper_paths` of the live model) says a DDP or
    DataParallel put it: without the model, a DDP ``module.`` and a submodule really called
    ``module`` look the same.
    """
    parts = [p for p in fqn.split(".") if p not in UNAMBIGUOUS]
    if paths is None:
        return ".".join(parts)
    # Compared without the unambiguous segments: state-dict keys may already lack some
    # (checkpoint_wrapper hides its own through state-dict hooks; named_parameters keeps it).
    parallel = {canonical_fqn(p) for p in paths if p.rsplit(".", 1)[-1] == "module"}
    return ".".join(p for i, p in enumerate(parts)
                    if not (p == "module" and ".".join(parts[: i + 1]) in parallel))


def _without_module(fqn: str) -> str:
    return ".".join(p for p in fqn.split(".") if p != "module")


@dataclasses.dataclass(frozen=True)
class Rename:
    """One key renamed: which wrapper segments it lost and which it gained."""

    source: str
    target: str
    removed: tuple[str, ...] = ()
    added: tuple[str, ...] = ()

    @classmethod
    def between(cls, source: str, target: str) -> Rename:
        def segments(key: str) -> Counter[str]:
            return Counter(p for p in key.split(".") if p in WRAPPER_SEGMENTS)

        src, dst = segments(source), segments(target)
        return cls(source, target, tuple(sorted((src - dst).elements())),
                   tuple(sorted((dst - src).elements())))


def segment_counts(renames: Iterable[Rename]) -> tuple[Counter[str], Counter[str]]:
    """How many keys lost, and how many gained, each wrapper segment: ``{'_orig_mod.': 12}``."""
    renames = list(renames)
    return (Counter(f"{s}." for r in renames for s in r.removed),
            Counter(f"{s}." for r in renames for s in r.added))


def describe_renames(renames: Iterable[Rename]) -> list[str]:
    """Phrases for a summary: ``removed '_orig_mod.' from 12 keys``, ``added ...``, and keys
    whose segments only moved (``_orig_mod.enc.0.w`` -> ``enc._orig_mod.0.w``)."""
    renames = list(renames)
    removed, added = segment_counts(renames)

    def listed(c: Counter[str], word: str) -> str:
        return ", ".join(f"'{k}' {word} {n} key{'s' if n != 1 else ''}" for k, n in c.most_common())

    parts = [f"removed {listed(removed, 'from')}"] if removed else []
    parts += [f"added {listed(added, 'to')}"] if added else []
    moved = sum(1 for r in renames if not (r.removed or r.added))
    parts += [f"reordered wrapper segments in {moved} keys"] if moved else []
    return parts or ["keys already matched, nothing renamed"]


def match_keys(source_keys: Iterable[str], target_keys: Iterable[str],
               target_paths: Iterable[str] = ()) -> Renames:
    """Map each source key to the target key it should fill (only those that match), and list
    the renames. ``target_paths``: :func:`wrapper_paths` of the target model.

    First key by key: exact matches stay, the rest match by canonical name. If that leaves
    keys unmatched or collides, the whole-dict reading is tried (a leading ``module.`` that
    *every* source key carries is DDP's) and kept only if it matches every key on both sides:
    that resolves DDP checkpoints of models with a real submodule called ``module``.
    """
    sources, targets, paths = list(source_keys), list(target_keys), frozenset(target_paths)
    try:
        by_key, collision = _match_key_by_key(sources, targets, paths), None
    except KeyCollisionError as exc:
        by_key, collision = None, exc
    if by_key is not None and len(by_key[0]) == len(sources) == len(targets):
        return by_key
    whole = _match_whole_dict(sources, targets, paths)
    if whole is not None:
        return whole
    if by_key is None:
        raise collision  # type: ignore[misc]
    return by_key


def _match_whole_dict(sources: list[str], targets: list[str], paths: frozenset[str]
                      ) -> Renames | None:
    try:
        cleaned, _ = clean_keys(sources)
    except KeyCollisionError:
        return None
    by_canon: dict[str, str] = {}
    for t in targets:
        c = canonical_fqn(t, paths)
        if c in by_canon:
            return None
        by_canon[c] = t
    if len(sources) != len(targets) or set(cleaned.values()) != set(by_canon):
        return None
    mapping = {s: by_canon[cleaned[s]] for s in sources}
    return mapping, [Rename.between(s, t) for s, t in mapping.items() if s != t]


def _match_key_by_key(sources: list[str], targets: list[str], paths: frozenset[str]) -> Renames:
    """Exact match (never renamed); else the same name once the unambiguous segments are
    removed; else once ``module`` segments are removed too. A name that several target keys
    share is not used at that tier. Two source keys that claim one target key collide."""
    by_canon: dict[str, list[str]] = defaultdict(list)
    by_bare: dict[str, list[str]] = defaultdict(list)
    for t in targets:
        canon = canonical_fqn(t, paths)
        by_canon[canon].append(t)
        by_bare[_without_module(canon)].append(t)
    exact = set(sources) & set(targets)  # first, so no renamed key can take their place
    mapping = {s: s for s in sources if s in exact}
    claimed = dict(mapping)
    renames = []
    for s in sources:
        if s in exact:
            continue
        candidates = by_canon.get(canonical_fqn(s), [])
        if len(candidates) != 1:
            candidates = by_bare.get(_without_module(canonical_fqn(s)), [])
        if len(candidates) != 1:
            continue
        t = candidates[0]
        if t in claimed:
            raise KeyCollisionError(
                f"checkpoint keys {claimed[t]!r} and {s!r} would both load into {t!r}; refusing "
                "to overwrite one with the other (the file holds two copies of the same "
                "parameter: clean it by hand or pick one)")
        claimed[t], mapping[s] = s, t
        renames.append(Rename.between(s, t))
    return mapping, renames


def _leading_wrappers(key: str) -> list[str]:
    run = []
    for p in key.split(".")[:-1]:
        if p not in WRAPPER_SEGMENTS:
            break
        run.append(p)
    return run


def clean_keys(keys: Iterable[str]) -> Renames:
    """Rename keys without a model: the unambiguous segments anywhere, and one leading
    ``module.`` (in the leading run of wrapper segments) when every key carries it."""
    keys = list(keys)
    leading_module = bool(keys) and all("module" in _leading_wrappers(k) for k in keys)
    mapping: dict[str, str] = {}
    renames, seen = [], {}
    for k in keys:
        parts = k.split(".")
        if leading_module:  # DDP adds exactly one 'module.': drop the first in the leading run
            parts.pop(_leading_wrappers(k).index("module"))
        clean = ".".join(p for p in parts if p not in UNAMBIGUOUS)
        if clean in seen:
            raise KeyCollisionError(f"keys {seen[clean]!r} and {k!r} both clean to {clean!r}; "
                                    "refusing to keep one silently")
        seen[clean], mapping[k] = k, clean
        if clean != k:
            renames.append(Rename.between(k, clean))
    return mapping, renames


def clean_state_dict(state_dict: Mapping[str, Any], model: nn.Module | None = None
                     ) -> tuple[dict[str, Any], list[Rename]]:
    """A renamed copy of ``state_dict`` and the renames; the input is never mutated.

    Without ``model``: :func:`clean_keys`. With ``model``: keys renamed to exactly what
    ``model.load_state_dict`` expects (compiled or not, wrapped or not); keys it cannot place
    keep their names. Raises :class:`KeyCollisionError` rather than drop a tensor.
    """
    keys = list(state_dict)
    if model is None:
        mapping, renames = clean_keys(keys)
    else:
        matched, renames = match_keys(keys, model.state_dict(), wrapper_paths(model))
        mapping = {k: matched.get(k, k) for k in keys}
        owner: dict[str, str] = {}
        for k, v in mapping.items():  # an unmatched key must not land on a matched one
            if v in owner:
                raise KeyCollisionError(f"keys {owner[v]!r} and {k!r} both map to {v!r}")
            owner[v] = k
    return {mapping[k]: state_dict[k] for k in keys}, renames
