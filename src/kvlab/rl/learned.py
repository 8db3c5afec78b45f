"""``learned:FILE``: a policy trained on ``kvlab/PrefixEviction-v0`` (a MaskablePPO zip
saved by ``kvlab rl train``) as the simulator's eviction policy.

At each eviction the policy scores the ``k`` least recently freed cached blocks (the
candidates; candidate 0 is LRU's victim, as in the environment) with the features of
:func:`kvlab.rl.features.candidate_rows` (the environment's own function) and evicts
the argmax of the network's action logits over the real candidates (the deterministic
action of ``model.predict``). The network is read once from the zip into numpy arrays
(``Linear`` layers and their activations), so a decision costs one small matrix
product per layer, not a torch call.

What the policy keeps per block, from the pool's hooks: ``last`` (the clock at its last
touch or caching), ``touches`` since caching, ``gap`` between its last two touches,
``rank`` (:meth:`set_retention`), ``depth`` and its parent's key (:meth:`set_place`,
called by the per-block KV manager for policies that define it), and per key the
distinct child keys seen so far. The clock counts *access rounds*: it moves by one
whenever a hit or caching arrives at a later tick than the previous one (the
environment counts requests; a round is the requests served at one engine tick).

Per block only: the choice reads every candidate's state at the eviction, which the
extent pool does not keep per block (``no_extents_reason``).

Invariants: ``_queue`` holds exactly the evictable blocks, least recently freed first;
``_key`` holds the blocks with content (a block loses its entry when it is evicted).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from kvlab.errors import ConfigError
from kvlab.rl.features import NUM_FEATURES, candidate_rows
from kvlab.sim.policies.base import PolicyBase

Layer = Callable[[np.ndarray], np.ndarray]


class LearnedPolicy(PolicyBase):
    """Evict the candidate a trained network scores highest (see module doc)."""

    name = "learned"
    uses_access = True
    uses_retention = True
    supports_extents = False
    no_extents_reason = (
        "a learned policy scores each eviction's candidates from per-block state; "
        "it runs on the per-block pool"
    )

    def __init__(self, layers: list[Layer], k: int, source: str = "") -> None:
        self.layers = layers
        self.k = k
        self.source = source
        self._queue: OrderedDict[int, None] = OrderedDict()
        self._key: dict[int, Hashable] = {}
        self._last: dict[int, int] = {}
        self._touches: dict[int, int] = {}
        self._gap: dict[int, int] = {}
        self._rank: dict[int, int] = {}
        self._depth: dict[int, int] = {}
        self._parent: dict[int, Hashable | None] = {}
        self._children: dict[Hashable, int] = {}
        self._seen: set[Hashable] = set()
        self._clock = 0
        self._tick: int | None = None
        self.decisions = 0
        self.non_lru = 0  # decisions that did not take candidate 0

    # -- the pool's hooks ----------------------------------------------------
    def __len__(self) -> int:
        return len(self._queue)

    def _now(self, now: int) -> int:
        if self._tick is None or now > self._tick:
            self._tick = now
            self._clock += 1
        return self._clock

    def insert(self, block_id: int, now: int) -> None:
        self._queue[block_id] = None

    def insert_many(self, blocks: Iterable[int], now: int) -> None:
        q = self._queue
        for b in blocks:
            q[b] = None

    def remove(self, block_id: int) -> None:
        del self._queue[block_id]

    def set_retention(self, block_id: int, rank: int) -> None:
        self._rank[block_id] = rank

    def set_place(self, block_id: int, depth: int, parent_block: int) -> None:
        """Block ``block_id`` is about to be cached as block ``depth`` of its prompt,
        after ``parent_block`` (-1 for the first)."""
        self._depth[block_id] = depth
        self._parent[block_id] = self._key.get(parent_block) if parent_block >= 0 else None

    def on_access(self, block_id: int, key: Hashable, now: int) -> None:
        r = self._now(now)
        b = block_id
        if b not in self._key:  # freshly cached
            self._key[b] = key
            self._last[b] = r
            self._touches[b] = 0
            self._gap[b] = 0
            if key not in self._seen:
                self._seen.add(key)
                p = self._parent.get(b)
                if p is not None:
                    self._children[p] = self._children.get(p, 0) + 1
            return
        self._touches[b] += 1
        self._gap[b] = r - self._last[b]
        self._last[b] = r

    def pop_victim(self, now: int) -> int:
        return self.pop_victims(1, now)[0]

    def pop_victims(self, n: int, now: int) -> list[int]:
        r = self._now(now)
        k, q = self.k, self._queue
        out: list[int] = []
        for _ in range(n):
            cands = list(islice(q, k))
            ch = {b: self._children.get(self._key.get(b), 0) for b in cands}
            rows = candidate_rows(
                r,
                cands,
                k,
                self._last,
                self._touches,
                self._gap,
                _Default(self._rank, 1),
                _Default(self._depth, 0),
                ch,
            )
            a = self.choose(rows) if len(cands) > 1 else 0
            b = cands[a]
            self.decisions += 1
            self.non_lru += a != 0
            del q[b]
            self._forget(b)
            out.append(b)
        return out

    def _forget(self, b: int) -> None:
        self._key.pop(b, None)
        self._parent.pop(b, None)

    def order(self) -> list[int]:
        return list(self._queue)

    # -- the network ---------------------------------------------------------
    def choose(self, rows: list[tuple[float, ...]]) -> int:
        """The index of the real candidate with the highest logit."""
        x = np.zeros((self.k, NUM_FEATURES), dtype=np.float32)
        x[: len(rows)] = rows
        h = x.reshape(-1)
        for f in self.layers:
            h = f(h)
        return int(np.argmax(h[: len(rows)]))


class _Default:
    """``d[x]``, ``default`` for a block the pool never described."""

    __slots__ = ("d", "default")

    def __init__(self, d: dict[int, int], default: int) -> None:
        self.d, self.default = d, default

    def __getitem__(self, x: int) -> int:
        return self.d.get(x, self.default)


def _affine(w: np.ndarray, b: np.ndarray) -> Layer:
    def layer(h: np.ndarray) -> np.ndarray:
        return np.asarray(w @ h + b)

    return layer


def _relu(h: np.ndarray) -> np.ndarray:
    return np.maximum(h, 0.0)


def _numpy_layers(modules: Iterable[Any]) -> list[Layer]:
    import torch

    out: list[Layer] = []
    for m in modules:
        if isinstance(m, torch.nn.Linear):
            w = m.weight.detach().cpu().numpy().astype(np.float64)
            b = m.bias.detach().cpu().numpy().astype(np.float64)
            out.append(_affine(w, b))
        elif isinstance(m, torch.nn.Tanh):
            out.append(np.tanh)
        elif isinstance(m, torch.nn.ReLU):
            out.append(_relu)
        elif isinstance(m, torch.nn.Flatten | torch.nn.Identity):
            continue
        else:
            raise ConfigError(f"unsupported layer {type(m).__name__} in the policy network")
    return out


def load_maskable_ppo(path: str | Path, what: str = "policy") -> Any:
    """The MaskablePPO model saved in ``path`` by ``kvlab rl train`` (on the CPU);
    one-line ConfigError naming the file when it is missing, a directory or not such a
    model, or when the ``rl`` extra is missing (``what`` names the option in that line)."""
    p = Path(path)
    if not str(path):
        raise ConfigError(f"{what} needs a file (a zip saved by `kvlab rl train`)")
    if p.is_dir():
        raise ConfigError(f"{p}: a directory, not a policy file (a zip saved by `kvlab rl train`)")
    if not p.is_file():
        raise ConfigError(f"{p}: no such policy file (a zip saved by `kvlab rl train`)")
    try:
        from sb3_contrib import MaskablePPO
    except ImportError as e:
        raise ConfigError(f"{what} needs the rl extra (pip install 'kvlab[rl]'): {e}") from None
    try:
        return MaskablePPO.load(str(p), device="cpu")
    except Exception as e:  # a corrupt or foreign zip
        raise ConfigError(f"{p}: not a MaskablePPO policy ({type(e).__name__}: {e})") from None


def load_learned(path: str) -> LearnedPolicy:
    """The policy in ``path`` (a MaskablePPO zip from ``kvlab rl train``); ConfigError
    when the ``rl`` extra is missing or the file is not such a policy."""
    p = Path(path)
    model = load_maskable_ppo(path, "policy learned:FILE" if not path else f"policy learned:{path}")
    import torch

    shape = model.observation_space.shape
    k = int(getattr(model.action_space, "n", 0))
    if shape is None or len(shape) != 1 or k < 1 or shape[0] != k * NUM_FEATURES:
        raise ConfigError(
            f"{p}: not a PrefixEviction-v0 policy (observation {shape}, "
            f"expected k * {NUM_FEATURES} features for Discrete(k) actions)"
        )
    pol = model.policy
    if type(pol.pi_features_extractor).__name__ != "FlattenExtractor":
        raise ConfigError(f"{p}: the policy's features extractor is not a flat vector")
    net = pol.mlp_extractor.policy_net
    with torch.no_grad():
        layers = _numpy_layers([*net, pol.action_net])
    return LearnedPolicy(layers, k, str(p))
