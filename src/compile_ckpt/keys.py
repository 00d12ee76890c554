"""Key matching: the segments wrappers put into state-dict keys (``_orig_mod``, ``module``, ...),
read off the live module tree as DCP's ``state_dict.py`` does, so that your own submodule
called ``module`` or ``_orig_mod`` keeps its name. Standalone (torch and the standard library):
copy it into a trainer and call ``model.load_state_dict(clean_state_dict(sd, model)[0])``."""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

__all__ = ["WRAPPERS", "WRAPPER_SEGMENTS", "KeyCollisionError", "Rename", "clean_state_dict",
           "plain_name", "plain_state_dict", "strip_prefix", "unwrap_model"]

#: Every wrapper, one row each: (the child it keeps the model as, its or a base class's names).
WRAPPERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("_orig_mod", ("OptimizedModule",)),  # torch.compile
    ("module", ("DistributedDataParallel", "DataParallel")),
    ("_fsdp_wrapped_module", ("FullyShardedDataParallel",)),  # FSDP (v1)
    ("_checkpoint_wrapped_module", ("ActivationWrapper",)),  # checkpoint/offload_wrapper
)
WRAPPER_SEGMENTS: tuple[str, ...] = tuple(seg for seg, _ in WRAPPERS)
_UNAMBIGUOUS = frozenset(WRAPPER_SEGMENTS) - {"module"}  # no ordinary model uses these names


class KeyCollisionError(ValueError):
    """Two keys would land on the same name: one tensor would silently replace another."""


def wrapper_segment(module: nn.Module | None) -> str | None:
    """The child under which ``module``, if it is a wrapper, keeps the module it wraps."""
    kinds = {c.__name__ for c in type(module).__mro__}
    return next((seg for seg, classes in WRAPPERS if kinds & set(classes)
                 and isinstance(module._modules.get(seg), nn.Module)), None)  # type: ignore[union-attr]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module under any stack of wrappers around ``model`` (idempotent)."""
    while (seg := wrapper_segment(model)) is not None:
        model = model._modules[seg]  # type: ignore[assignment]
    return model


def plain_name(name: str, model: nn.Module) -> str:
    """``name`` (a key or module path of ``model``) without the segments its wrappers put there."""
    kept, module = [], model
    for part in name.split("."):
        while module is not None and (seg := wrapper_segment(module)) and part != seg and \
                part not in module._parameters and part not in module._buffers:
            module = module._modules[seg]  # the wrapper's state-dict hook hid its segment
        if module is not None and part == wrapper_segment(module):
            module = module._modules[part]
            continue
        kept.append(part)
        module = module._modules.get(part) if module is not None else None
    return ".".join(kept)


@dataclasses.dataclass(frozen=True)
class Rename:
    """One key renamed: which wrapper segments it lost and which it gained."""

    source: str
    target: str
    removed: tuple[str, ...] = ()
    added: tuple[str, ...] = ()

    @classmethod
    def between(cls, source: str, target: str) -> Rename:
        src, dst = (Counter(p for p in k.split(".") if p in WRAPPER_SEGMENTS)
                    for k in (source, target))
        return cls(source, target, tuple(sorted((src - dst).elements())),
                   tuple(sorted((dst - src).elements())))


def segment_counts(renames: Iterable[Rename]) -> tuple[Counter[str], Counter[str]]:
    """How many keys lost, and how many gained, each wrapper segment: ``{'_orig_mod.': 12}``."""
    renames = list(renames)
    return (Counter(f"{s}." for r in renames for s in r.removed),
            Counter(f"{s}." for r in renames for s in r.added))


def describe_renames(renames: Iterable[Rename]) -> list[str]:
    """Phrases for a summary: ``removed '_orig_mod.' from 12 keys``, ``added ...``."""
    renames = list(renames)
    parts = [f"{verb} " + ", ".join(f"'{k}' {word} {n} key{'s' * (n != 1)}"
                                    for k, n in counts.most_common())
             for verb, word, counts in zip(("removed", "added"), ("from", "to"),
                                           segment_counts(renames), strict=True) if counts]
    moved = sum(not (r.removed or r.added) for r in renames)
    return parts + [f"reordered wrapper segments in {moved} keys"] * bool(moved) or [
        "keys already matched, nothing renamed"]


def _trie(names: Mapping[str, str]) -> dict:
    """Dotted names as a tree of their parts; the entry ``None`` holds the value of a name."""
    root: dict = {}
    for name, value in names.items():
        node = root
        for part in name.split(".") if name else []:
            node = node.setdefault(part, {})
        node.setdefault(None, value)
    return root


def _align(src: dict, dst: dict) -> dict[str, str]:
    """Walk the source names' tree beside the targets'. A part a wrapper may have put there is
    read both ways (skipped, or a submodule's): the one placing more distinct names wins."""
    out = {src[None]: dst[None]} if None in src and None in dst else {}
    for part, child in src.items():
        options = [_align(child, dst[part])] if part is not None and part in dst else []
        options += [_align(child, dst)] if part in WRAPPER_SEGMENTS else []
        if options:
            out.update(max(options, key=lambda m: (len(set(m.values())), len(m))))
    return out


def _one_each(mapping: dict[str, str]) -> dict[str, str]:
    """``mapping``, or :class:`KeyCollisionError` if two keys would land on one name."""
    owner: dict[str, str] = {}
    for k, v in mapping.items():
        if owner.setdefault(v, k) != k:
            raise KeyCollisionError(f"keys {owner[v]!r} and {k!r} would both become {v!r}; "
                                    "refusing to let one overwrite the other")
    return mapping


def with_metadata(items: Iterable[tuple[str, Any]], metadata: Any) -> OrderedDict[str, Any]:
    """A state dict of ``items`` with ``_metadata`` (module path -> version) as torch keeps it."""
    out = OrderedDict(items)
    if metadata is not None:
        out._metadata = metadata  # type: ignore[attr-defined]
    return out


def metadata_for(metadata: Mapping[str, Any] | None, mapping: Mapping[str, str]) -> Any:
    """``_metadata`` under the module paths the key ``mapping`` leads to, matched from the leaf
    up (where two land on one, the later, inner module's wins)."""
    modules: dict[str, str] = {}
    for s, t in mapping.items():
        a, b = s.split(".")[:-1], t.split(".")[:-1]
        while a and b and a[-1] == b[-1]:
            modules[".".join(a)] = ".".join(b)
            a, b = a[:-1], b[:-1]
        modules[".".join(a)] = ".".join(b)  # what is left: wrappers' paths, onto their parent
    return None if metadata is None else OrderedDict((modules.get(k, k), v)
                                                     for k, v in metadata.items())


def plain_state_dict(model: nn.Module) -> OrderedDict[str, Any]:
    """``model.state_dict()`` less only what its real wrappers put in it: the plain model's."""
    state = model.state_dict()
    names = _one_each({k: plain_name(k, model) for k in state})
    return with_metadata(((names[k], v) for k, v in state.items()),
                         metadata_for(getattr(state, "_metadata", None), names))


def clean_state_dict(state_dict: Mapping[str, Any], model: nn.Module | None = None
                     ) -> tuple[OrderedDict[str, Any], list[Rename]]:
    """A renamed copy of ``state_dict`` (``_metadata`` too) and the renames. With ``model``, each
    key becomes the key of ``model`` it fills (or keeps its name); without, compile's, FSDP's and
    checkpoint_wrapper's segments go, and DDP's leading ``module`` where every key has it.
    Raises :class:`KeyCollisionError` rather than drop a tensor."""
    keys = list(state_dict)
    if model is not None:
        plain = {plain_name(t, model): t for t in reversed(list(model.state_dict(keep_vars=True)))}
        mapping = {k: k for k in keys} | _align(_trie({k: k for k in keys}), _trie(plain))
    else:
        ddp = bool(keys) and all("module" in itertools.takewhile(
            lambda p: p in WRAPPER_SEGMENTS, k.split(".")[:-1]) for k in keys)
        mapping = {}
        for k in keys:
            *body, last = k.split(".")
            run = list(itertools.takewhile(lambda p: p in WRAPPER_SEGMENTS, body))
            if ddp and "module" in run:
                body.pop(run.index("module"))
            mapping[k] = ".".join([p for p in body if p not in _UNAMBIGUOUS] + [last])
    renames = [Rename.between(k, v) for k, v in _one_each(mapping).items() if k != v]
    meta = metadata_for(getattr(state_dict, "_metadata", None), mapping)
    return with_metadata(((mapping[k], state_dict[k]) for k in keys), meta), renames


def strip_prefix(key: str, prefix: str) -> str | None:
    """``key`` without ``prefix`` (``"model."``, ``"base_model.model."``), wherever wrapper
    segments sit (they stay); None if it lacks it."""
    want, parts, kept = [p for p in prefix.split(".") if p], key.split("."), []
    for i, part in enumerate(parts):
        if not want:
            return ".".join(kept + parts[i:])
        if part == want[0]:
            want.pop(0)
        elif part in WRAPPER_SEGMENTS:
            kept.append(part)
        else:
            return None
    return None
