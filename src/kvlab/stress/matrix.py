"""The stress matrix: scenarios, SLOs and the safe-range search grid, read from YAML or JSON.

A matrix file (see docs/stress.md and ``kvlab stress --print-default-matrix``)::

    version: 1
    defaults: {gpu: rtx-4090}          # any scenario field
    slo: {ttft_p99_s: 2.0, tpot_p99_s: 0.1, max_preemptions: 0, max_kv_usage: 0.95}
    search: {seq_lens: [1024, 4096], gen_len: 256, max_value: 1024}
    scenarios:
      - {name: short, model: Qwen/Qwen2.5-0.5B, batch: 32, seq_len: 1024, gen_len: 128}

Every error names the file and line (YAML node marks; JSON is read by the same parser)
and the field: a :class:`~kvlab.errors.WorkloadError`, exit code 2.

Scenario semantics (the workload is built by :mod:`kvlab.stress.scenario`):
``concurrency`` independent clients each submit ``batch`` requests together
(``seq_len`` prompt tokens, ``gen_len`` output tokens), ``rounds`` times; with
``arrival: closed`` a slot of a batch sends its next request as soon as the previous
one finishes, ``poisson`` sends each client's batches open loop at Poisson times
(``rate_per_s`` batches per second over all clients), ``uniform`` spreads the
clients' first batches evenly over ``ramp_s`` seconds (then closed loop).
``shared_prefix`` is the fraction of every prompt that is one shared system prompt.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from kvlab.errors import ConfigError, KvlabError, WorkloadError
from kvlab.stress.slo import Slo

ARRIVALS = ("closed", "poisson", "uniform")
#: The most requests one scenario may send (batch x concurrency x rounds).
MAX_SCENARIO_REQUESTS = 1_000_000
DEFAULT_GPU = "rtx-4090"
MATRIX_VERSION = 1

#: Where the shipped default matrix lives inside the package.
DEFAULT_MATRIX = ("kvlab.data", "stress/default_matrix.yaml")


@dataclass(frozen=True, slots=True)
class Scenario:
    """One cell of the matrix. Counts are requests and tokens; times are seconds."""

    name: str
    model: str
    gpu: str = DEFAULT_GPU
    batch: int = 1
    seq_len: int = 1024
    gen_len: int = 128
    concurrency: int = 1
    rounds: int = 1
    shared_prefix: float = 0.0
    arrival: str = "closed"
    rate_per_s: float | None = None
    ramp_s: float = 0.0
    kv_dtype: str | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    max_model_len: int | None = None
    tp: int = 1
    offload_gb: float | None = None
    enable_prefix_caching: bool = True
    seed: int = 0
    claimed: dict[str, Any] = field(default_factory=dict)

    @property
    def num_requests(self) -> int:
        return self.batch * self.concurrency * self.rounds

    def with_changes(self, **changes: Any) -> Scenario:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["claimed"]:
            d.pop("claimed")
        return d


@dataclass(frozen=True, slots=True)
class SearchSpec:
    """The safe-range search grid: the prompt lengths searched, the generation length,
    the largest batch or concurrency tried, and the rounds of a concurrency client."""

    seq_lens: tuple[int, ...] = (1024, 2048, 4096, 8192, 16384, 32768)
    gen_len: int = 256
    max_value: int = 1024
    concurrency_rounds: int = 3


@dataclass(frozen=True, slots=True)
class Matrix:
    scenarios: tuple[Scenario, ...]
    slo: Slo = field(default_factory=Slo)
    search: SearchSpec = field(default_factory=SearchSpec)
    source: str = "<matrix>"

    def pairs(self) -> list[tuple[str, str]]:
        """The (model, gpu) pairs of the scenarios, in first-seen order."""
        seen: dict[tuple[str, str], None] = {}
        for s in self.scenarios:
            seen.setdefault((s.model, s.gpu), None)
        return list(seen)

    def with_gpu(self, gpu: str) -> Matrix:
        return replace(self, scenarios=tuple(s.with_changes(gpu=gpu) for s in self.scenarios))

    def with_model(self, model: str) -> Matrix:
        return replace(self, scenarios=tuple(s.with_changes(model=model) for s in self.scenarios))


# ---------------------------------------------------------------- reading


class _Doc:
    """A parsed file: plain values plus the 1-based line of every path in it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lines: dict[tuple[Any, ...], int] = {}
        self._loader: Any = None

    def error(self, where: tuple[Any, ...], message: str) -> WorkloadError:
        line = None
        probe = where
        while line is None and probe:
            line = self.lines.get(probe)
            probe = probe[:-1]
        name = "".join(f".{p}" if isinstance(p, str) else f"[{p}]" for p in where).lstrip(".")
        return WorkloadError(
            message, path=self.path, line=line or self.lines.get(()), field=name or None
        )

    def build(self, node: Any, where: tuple[Any, ...]) -> Any:
        import yaml

        self.lines.setdefault(where, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for k, v in node.value:
                if not isinstance(k, yaml.ScalarNode):
                    raise WorkloadError(
                        "keys must be plain names", path=self.path, line=k.start_mark.line + 1
                    )
                key = str(k.value)
                if key in out:
                    raise WorkloadError(
                        f"duplicate key {key!r}", path=self.path, line=k.start_mark.line + 1
                    )
                self.lines[(*where, key)] = k.start_mark.line + 1
                out[key] = self.build(v, (*where, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(v, (*where, i)) for i, v in enumerate(node.value)]
        if self._loader is None:
            self._loader = yaml.SafeLoader("")
        return self._loader.construct_object(node, deep=True)


def parse_matrix(text: str, path: str = "<matrix>") -> Matrix:
    """A :class:`Matrix` from YAML or JSON ``text``; errors name ``path``, line and field."""
    try:
        import yaml
    except ImportError:  # pragma: no cover - pyyaml is a core dependency
        from kvlab.errors import DependencyMissing

        raise DependencyMissing("pyyaml", "stress") from None
    doc = _Doc(path)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = None if mark is None else mark.line + 1
        raise WorkloadError(f"not valid YAML/JSON: {e.problem}", path=path, line=line) from None
    except yaml.YAMLError as e:
        raise WorkloadError(f"not valid YAML/JSON: {e}", path=path) from None
    if node is None:
        raise WorkloadError("the matrix is empty", path=path, line=1)
    try:
        data = doc.build(node, ())
    except yaml.constructor.ConstructorError as e:
        mark = e.problem_mark
        raise WorkloadError(
            f"bad value: {e.problem}", path=path, line=None if mark is None else mark.line + 1
        ) from None
    return _matrix(doc, data)


def load_matrix(path: str | Path | None = None) -> Matrix:
    """The matrix in ``path``, or the shipped default matrix when None."""
    if path is None:
        return parse_matrix(default_matrix_text(), "default_matrix.yaml")
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WorkloadError("no such file", path=p) from None
    except (OSError, UnicodeDecodeError) as e:
        raise WorkloadError(f"cannot read: {e}", path=p) from None
    return parse_matrix(text, str(p))


def default_matrix_text() -> str:
    """The shipped default matrix, as text (``kvlab stress --print-default-matrix``)."""
    from importlib.resources import files

    package, name = DEFAULT_MATRIX
    res = files(package)
    for part in name.split("/"):
        res = res / part
    return res.read_text(encoding="utf-8")


_TOP = ("version", "defaults", "slo", "search", "scenarios")
_INT_FIELDS = (
    "batch",
    "seq_len",
    "gen_len",
    "concurrency",
    "rounds",
    "tp",
    "seed",
)
_OPT_INT_FIELDS = ("max_num_seqs", "max_num_batched_tokens", "max_model_len")


def _matrix(doc: _Doc, data: Any) -> Matrix:
    if not isinstance(data, dict):
        raise doc.error((), "the matrix must be a mapping with a 'scenarios' list")
    for k in data:
        if k not in _TOP:
            raise doc.error((k,), f"unknown key; known: {', '.join(_TOP)}")
    version = data.get("version", MATRIX_VERSION)
    if version != MATRIX_VERSION:
        raise doc.error(("version",), f"unsupported version {version!r}; this kvlab reads 1")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise doc.error(("defaults",), "must be a mapping of scenario fields")
    slo_d = data.get("slo", {})
    if not isinstance(slo_d, dict):
        raise doc.error(("slo",), "must be a mapping")
    try:
        slo = Slo.from_dict(slo_d)
    except ConfigError as e:
        key = next((k for k in slo_d if f"slo.{k}" in str(e) or repr(k) in str(e)), None)
        raise doc.error(("slo",) if key is None else ("slo", key), str(e)) from None
    search = _search(doc, data.get("search", {}))
    raw = data.get("scenarios")
    if not isinstance(raw, list) or not raw:
        raise doc.error(("scenarios",), "must be a non-empty list of scenarios")
    scenarios = []
    names: set[str] = set()
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise doc.error(("scenarios", i), "a scenario must be a mapping")
        merged = {**defaults, **item}
        s = _scenario(doc, merged, ("scenarios", i), set(item))
        if s.name in names:
            raise doc.error(("scenarios", i, "name"), f"duplicate scenario name {s.name!r}")
        names.add(s.name)
        scenarios.append(s)
    return Matrix(tuple(scenarios), slo, search, doc.path)


def _search(doc: _Doc, d: Any) -> SearchSpec:
    if not isinstance(d, dict):
        raise doc.error(("search",), "must be a mapping")
    known = tuple(SearchSpec.__dataclass_fields__)
    for k in d:
        if k not in known:
            raise doc.error(("search", k), f"unknown key; known: {', '.join(known)}")
    dflt = SearchSpec()
    seq = d.get("seq_lens", list(dflt.seq_lens))
    if not isinstance(seq, list) or not seq:
        raise doc.error(("search", "seq_lens"), "must be a non-empty list of token counts")
    for j, v in enumerate(seq):
        _int(doc, v, ("search", "seq_lens", j), 1)
    return SearchSpec(
        seq_lens=tuple(seq),
        gen_len=_int(doc, d.get("gen_len", dflt.gen_len), ("search", "gen_len"), 1),
        max_value=_int(doc, d.get("max_value", dflt.max_value), ("search", "max_value"), 1),
        concurrency_rounds=_int(
            doc,
            d.get("concurrency_rounds", dflt.concurrency_rounds),
            ("search", "concurrency_rounds"),
            1,
        ),
    )


def _int(doc: _Doc, v: Any, where: tuple[Any, ...], lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or v > 2**31 - 1:
        raise doc.error(where, f"must be an integer >= {lo}, got {v!r}")
    return v


def _scenario(doc: _Doc, d: dict[str, Any], where: tuple[Any, ...], own: set[str]) -> Scenario:
    def at(key: str) -> tuple[Any, ...]:
        # a field from ``defaults`` is located in the defaults block
        return (*where, key) if key in own else ("defaults", key)

    known = tuple(Scenario.__dataclass_fields__)
    for k in d:
        if k not in known:
            raise doc.error(at(k), f"unknown scenario field; known: {', '.join(known)}")
    for req in ("name", "model"):
        if req not in d:
            raise doc.error(where, f"a scenario needs '{req}'")
    if not isinstance(d["name"], str) or not d["name"].strip():
        raise doc.error(at("name"), "must be a non-empty string")
    for key in ("model", "gpu"):
        if key in d and (not isinstance(d[key], str) or not d[key]):
            raise doc.error(at(key), "must be a catalog name (kvlab models list / plan --help)")
    try:
        from kvlab.hardware import get_gpu
        from kvlab.models.catalog import get_model

        get_model(d["model"])
    except KvlabError as e:
        raise doc.error(at("model"), str(e)) from None
    try:
        get_gpu(d.get("gpu", DEFAULT_GPU))
    except KvlabError as e:
        raise doc.error(at("gpu"), str(e)) from None
    for key in _INT_FIELDS:
        if key in d:
            _int(doc, d[key], at(key), 0 if key == "seed" else 1)
    for key in _OPT_INT_FIELDS:
        if d.get(key) is not None:
            _int(doc, d[key], at(key), 1)
    sp = d.get("shared_prefix", 0.0)
    if isinstance(sp, bool) or not isinstance(sp, int | float) or not 0 <= sp < 1:
        raise doc.error(at("shared_prefix"), f"must be a fraction in [0, 1), got {sp!r}")
    arrival = d.get("arrival", "closed")
    if arrival not in ARRIVALS:
        raise doc.error(at("arrival"), f"must be one of {', '.join(ARRIVALS)}, got {arrival!r}")
    rate = d.get("rate_per_s")
    if arrival == "poisson" and not _positive(rate):
        raise doc.error(
            at("rate_per_s") if "rate_per_s" in d else where,
            "arrival poisson needs rate_per_s > 0 (batches per second)",
        )
    if rate is not None and not _positive(rate):
        raise doc.error(at("rate_per_s"), f"must be a finite number > 0, got {rate!r}")
    for key in ("ramp_s", "offload_gb"):
        v = d.get(key)
        if v is not None and not (_positive(v) or v == 0):
            raise doc.error(at(key), f"must be a finite number >= 0, got {v!r}")
    kv = d.get("kv_dtype")
    if kv is not None:
        from kvlab.models.spec import dtype_bytes

        try:
            dtype_bytes(str(kv))
        except ConfigError as e:
            raise doc.error(at("kv_dtype"), str(e)) from None
    if not isinstance(d.get("enable_prefix_caching", True), bool):
        raise doc.error(at("enable_prefix_caching"), "must be true or false")
    claimed = d.get("claimed", {})
    if not isinstance(claimed, dict):
        raise doc.error(at("claimed"), "must be a mapping (the old report's figures)")
    n = d.get("batch", 1) * d.get("concurrency", 1) * d.get("rounds", 1)
    if n > MAX_SCENARIO_REQUESTS:
        raise doc.error(
            where,
            f"batch x concurrency x rounds = {n:,} requests; at most "
            f"{MAX_SCENARIO_REQUESTS:,} per scenario",
        )
    values = {k: v for k, v in d.items() if k != "claimed"}
    if values.get("rate_per_s") is not None:
        values["rate_per_s"] = float(values["rate_per_s"])
    values["shared_prefix"] = float(sp)
    return Scenario(claimed=dict(claimed), **values)


def _positive(v: Any) -> bool:
    """``v`` is a finite number > 0 (not a bool)."""
    return not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v) and v > 0
