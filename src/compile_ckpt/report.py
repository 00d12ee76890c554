"""What a load did, as a value that holds names and numbers only (never a tensor), and the
message a strict load raises when the checkpoint does not fit."""

from __future__ import annotations

import dataclasses
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from .keys import Rename, canonical_fqn, describe_renames, segment_counts
from .layout import BARE

ShapeMismatch = tuple[str, tuple[int, ...], tuple[int, ...]]


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """What :func:`~compile_ckpt.load_checkpoint` did. ``str()`` is one line."""

    source: str = "a state dict in memory"
    target: str = ""
    total: int = 0
    loaded: int = 0
    renames: list[Rename] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    unexpected: list[str] = dataclasses.field(default_factory=list)
    shape_mismatches: list[ShapeMismatch] = dataclasses.field(default_factory=list)
    non_tensors: list[str] = dataclasses.field(default_factory=list)
    dtype_casts: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    #: Casts that would change the kind of value (complex into float, float into int): refused.
    uncastable: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    optimizer_loaded: bool = False
    scheduler_loaded: bool = False
    #: The file's metadata; a tensor in it is described (``"tensor float32 [3]"``), not held.
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    container: str = BARE
    other_state_dicts: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)  # outside the prefix asked for
    tied: dict[str, str] = dataclasses.field(default_factory=dict)  # absent key -> its tie
    checksums_verified: bool = False

    @property
    def removed_prefixes(self) -> Counter[str]:
        """How many keys lost each wrapper segment, e.g. ``{'_orig_mod.': 14}``."""
        return segment_counts(self.renames)[0]

    @property
    def added_prefixes(self) -> Counter[str]:
        """How many keys gained each wrapper segment (a clean checkpoint into a wrapped model)."""
        return segment_counts(self.renames)[1]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatches or self.non_tensors
                    or self.uncastable)

    def __str__(self) -> str:
        into = f" into {self.target}" if self.target else ""
        source = Path(self.source).name if os.sep in self.source else self.source
        parts = describe_renames(self.renames)
        if self.removed_prefixes:
            parts[0] = "cleaned prefixes: " + parts[0]
        if self.missing or self.unexpected:
            parts.append(f"{len(self.missing)} missing, {len(self.unexpected)} unexpected")
        if self.shape_mismatches:
            parts.append(f"{len(self.shape_mismatches)} shape mismatches skipped")
        if self.uncastable:
            parts.append(f"{len(self.uncastable)} tensors of an incompatible dtype skipped")
        if self.skipped:
            n = len(self.skipped)
            parts.append(f"left {n} key{'s' if n != 1 else ''} outside the prefix")
        if self.tied:
            parts.append(f"{len(self.tied)} tied to a loaded tensor ({', '.join(self.tied)})")
        extra = [name for name, done in (("optimizer", self.optimizer_loaded),
                                         ("scheduler", self.scheduler_loaded)) if done]
        if extra:
            parts.append("also loaded " + " and ".join(extra))
        if self.checksums_verified:
            parts.append("checksums verified")
        if self.other_state_dicts:
            parts.append(f"the file also holds {', '.join(self.other_state_dicts)} "
                         "(choose with key=)")
        head = f"compile_ckpt: {self.loaded}/{self.total} tensors from {source}{into}"
        return head + "; " + "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable form (for ``--json`` and notebook records)."""
        d = dataclasses.asdict(self)
        d.update(removed_prefixes=dict(self.removed_prefixes),
                 added_prefixes=dict(self.added_prefixes), summary=str(self))
        return d


def _by_module(keys: list[str], limit: int = 8) -> str:
    groups: dict[str, list[str]] = defaultdict(list)
    for k in keys:
        groups[k.rsplit(".", 1)[0] if "." in k else "<root>"].append(k.rsplit(".", 1)[-1])
    lines = []
    for mod, leaves in list(groups.items())[:limit]:
        more = f", ... (+{len(leaves) - 4})" if len(leaves) > 4 else ""
        lines.append(f"    {mod}: {', '.join(leaves[:4])}{more}")
    if len(groups) > limit:
        lines.append(f"    ... and {len(groups) - limit} more modules ({len(keys)} keys in all)")
    return "\n".join(lines)


def _foreign_prefix(report: LoadReport) -> str | None:
    """A leading segment that every unexpected key carries and whose removal gives missing
    keys: another trainer's prefix, such as Lightning's ``model.``."""
    heads = Counter(k.split(".", 1)[0] for k in report.unexpected if "." in k)
    if not heads:
        return None
    head, n = heads.most_common(1)[0]
    stripped = {k.split(".", 1)[1] for k in report.unexpected if k.startswith(head + ".")}
    missing = set(report.missing) | {canonical_fqn(m) for m in report.missing}
    return head if n == len(report.unexpected) and stripped & missing else None


def likely_cause(report: LoadReport) -> str:
    missing, unexpected = report.missing, report.unexpected
    if unexpected and missing:
        head = _foreign_prefix(report)
        if head:
            return (f"a prefix of another trainer: every unexpected key starts with '{head}.'. "
                    f"Pass prefix='{head}.' to load_checkpoint (or strip it with torch.nn.modules"
                    f".utils.consume_prefix_in_state_dict_if_present(sd, '{head}.'))")
        return "another architecture: the checkpoint and the model name different layers"
    if report.shape_mismatches:
        return "another architecture or configuration: same layer names, different sizes"
    if report.uncastable:
        return ("tensors whose values cannot be cast to the model's dtype without changing "
                "their kind (complex into real, floating point into integer)")
    if report.non_tensors:
        return "values that are not tensors where the model has tensors (a damaged or edited file)"
    if missing and not unexpected:
        return ("a partial checkpoint: it lacks some of the model's tensors (pass strict=False "
                "to load the rest)")
    return ("extra tensors in the checkpoint that the model does not have (pass strict=False to "
            "ignore them)")


def mismatch_message(report: LoadReport) -> str:
    """Why a strict load refused, by module, with the likely cause."""
    lines = [f"checkpoint does not fit {report.target} ({len(report.missing)} missing, "
             f"{len(report.unexpected)} unexpected, {len(report.shape_mismatches)} shape "
             f"mismatches, {len(report.non_tensors)} non-tensor values, "
             f"{len(report.uncastable)} incompatible dtypes); nothing was loaded"]
    if report.renames:
        lines.append(f"  wrapper prefixes were already reconciled: {report}")
    if report.missing:
        lines += ["  Missing key(s), by module:", _by_module(report.missing)]
    if report.unexpected:
        lines += ["  Unexpected key(s), by module:", _by_module(report.unexpected)]
    if report.shape_mismatches:
        lines.append("  Shape mismatches (key: checkpoint -> model):")
        lines += [f"    {k}: {list(a)} -> {list(b)}" for k, a, b in report.shape_mismatches[:10]]
        if len(report.shape_mismatches) > 10:
            lines.append(f"    ... and {len(report.shape_mismatches) - 10} more")
    if report.non_tensors:
        lines.append(f"  Not tensors: {', '.join(report.non_tensors[:10])}")
    if report.uncastable:
        lines.append("  Incompatible dtypes (key: checkpoint -> model):")
        lines += [f"    {k}: {a} -> {b}" for k, a, b in report.uncastable[:10]]
    lines.append(f"  Likely cause: {likely_cause(report)}")
    return "\n".join(lines)
