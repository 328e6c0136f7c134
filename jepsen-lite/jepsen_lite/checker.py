"""The linearizability checker: Wing & Gong / Lowe search, per key, in parallel.

This module owns the verdict. It pairs a history into operations, splits them by the
model's partition key (P-compositionality: a history is linearizable iff every
key's sub-history is), and searches each key in a worker process. It never reads
or writes files, never prints, and never trusts event order beyond ``index``.

Semantics (docs/architecture.md#jepsen-lite): an ``ok`` op took effect between its
invoke and completion; a ``fail`` op did not take effect (dropped); an ``info`` op,
or an invoke that never completed, may take effect at any point after its invoke,
or never. Read-only ops of unknown outcome constrain nothing and are dropped, and so
are info ops whose effect nothing observed (``Model.unobserved_info``: as if they
took effect at the end).

First, what the history knows, without search (:func:`_stale_op`): an ok op that
needs a state every possible producer of which was overwritten, in real time, before
the op began — with unique values, any stale read — refutes the key at once, and
the producer, the overwriter and the op are the minimal failing set.

Then the search (Lowe's refinement of Wing & Gong, as in porcupine): depth first over
the ops, an explicit stack of frames, never recursion; the linearized set is a Python
int bitset kept *relative to the oldest unlinearized ok op* (plus a bitset of info
ops), with a memo of (linearized set, state) so that no configuration is explored
twice. On top of porcupine (see :func:`_search`): reads legal now are linearized at
once and never backtracked over; identical ops are tried in return order only; the
returning op, or what makes the returning read legal, is tried first; a state (or a
kv epoch) that an unlinearized op still needs is never left when nothing can bring
it back; and a model may specialise itself to the history (kv with self-delimiting
values: hopeless appends are refused, values no get shows merge into one state).

A depth-first search finds a linearization of a valid history almost greedily;
proving a violation can mean exhausting the past. Past a time budget the frontier
search (Lowe's just-in-time linearizability, breadth first) takes over: it carries
every configuration the history so far allows, event by event, and the first return
that leaves none is where linearizability breaks. If that grows past its memory
bound, depth first resumes until the time limit (without one: until decided).

On a violation it reports, for the key: the op whose completion first makes the
history non-linearizable, the longest linearizable prefix (with a witness order), and
a 1-minimal set of ops that cannot be linearized (every other op relaxed to "may or
may not have happened"; see :func:`_explain`).

Over 600 lines because the search, the frontier search and the failure analysis
share the op encoding, the memo and the time budget; split apart they would expose
those internals across modules.
"""

from __future__ import annotations

import bisect
import concurrent.futures as cf
import dataclasses
import logging
import multiprocessing
import os
import time
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from jepsen_lite.history import HistoryError, Op, pair_operations, validate_events
from jepsen_lite.models import ANY, ILLEGAL, Model, freeze, get_model

log = logging.getLogger("jepsen_lite.checker")

UNKNOWN = "unknown"
Verdict = bool | str  # True, False or "unknown"

#: below this many ops in total, keys are checked in this process (no pool start-up)
PARALLEL_THRESHOLD = 4000
#: cache entries kept before the memo is dropped (correct, only slower): bounds memory
MAX_CACHE = 1_000_000
#: configurations the frontier search may hold at one return before it gives up
#: (verdict unknown): what bounds its memory when info ops make the frontier explode
MAX_FRONTIER = 600_000
#: time the failure analysis may take, at most, per failing key
EXPLAIN_SECONDS = 10.0
#: time the depth-first search gets before the frontier search takes over: this, or
#: DFS_SECONDS_PER_OP per op if more
DFS_SECONDS = 10.0
DFS_SECONDS_PER_OP = 300e-6
#: ops (besides the failing one) the minimality search considers, nearest first
EXPLAIN_WINDOW = 48


@dataclass
class Failure:
    """Why one key is not linearizable.

    ``op`` is the op whose completion first makes the key's history non-linearizable:
    every event before it (``prefix_index``) forms the longest linearizable prefix,
    witnessed by ``linearization`` (the last ops of one valid order, with the state
    after each). ``minimal`` is a set of ops that cannot be linearized even with every
    other op relaxed to "may or may not have taken effect" — except ``context_ops``
    older ops, kept as they were when the window had to be bounded; removing any one
    op of ``minimal`` makes the rest linearizable (when ``minimal_complete``).
    """

    key: Any
    op: Op
    minimal: list[Op]
    prefix_index: int
    prefix_ops: int
    linearization: list[tuple[Op, str]]
    context_ops: int = 0
    minimal_complete: bool = True
    descriptions: dict[int, str] = field(default_factory=dict)
    states_before: list[str] | None = None
    located: bool = True  # False: time ran out before `op` and the prefix were pinned down

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "op": _op_json(self.op, self.descriptions),
            "minimal": [_op_json(o, self.descriptions) for o in self.minimal],
            "minimal_complete": self.minimal_complete,
            "located": self.located,
            "context_ops": self.context_ops,
            "prefix_index": self.prefix_index,
            "prefix_ops": self.prefix_ops,
            "states_before": self.states_before,
            "linearization_tail": [
                {**_op_json(o, self.descriptions), "state_after": st}
                for o, st in self.linearization],
        }


def _op_json(op: Op, desc: dict[int, str]) -> dict[str, Any]:
    d = op.to_json()
    d["description"] = desc.get(op.id, "")
    return d


@dataclass
class KeyResult:
    """The verdict for one key."""

    key: Any
    valid: Verdict
    ops: int = 0
    info_ops: int = 0
    steps: int = 0
    elapsed: float = 0.0
    failure: Failure | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"key": self.key, "valid": self.valid, "ops": self.ops,
                             "info_ops": self.info_ops, "steps": self.steps,
                             "elapsed": round(self.elapsed, 6)}
        if self.reason:
            d["reason"] = self.reason
        if self.failure is not None:
            d["failure"] = self.failure.to_json()
        return d


@dataclass
class CheckResult:
    """The verdict for a history: ``valid`` is True, False or "unknown"."""

    valid: Verdict
    model: str
    keys: dict[Any, KeyResult]
    elapsed: float
    op_count: int
    ops_by_status: dict[str, int]
    ops: list[Op] = field(default_factory=list, repr=False)
    #: each op's partition key under the model (what ``keys`` is keyed by), by op id
    partition: dict[int, Any] = field(default_factory=dict, repr=False)

    @property
    def failures(self) -> list[Failure]:
        return [k.failure for k in self.keys.values() if k.failure is not None]

    @property
    def unknown_keys(self) -> list[Any]:
        return [k.key for k in self.keys.values() if k.valid == UNKNOWN]

    def to_json(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "model": self.model,
            "op_count": self.op_count,
            "ops_by_status": self.ops_by_status,
            "elapsed": round(self.elapsed, 6),
            "key_count": len(self.keys),
            "invalid_keys": [k.key for k in self.keys.values() if k.valid is False],
            "unknown_keys": self.unknown_keys,
            "failures": [f.to_json() for f in self.failures],
            "keys": [k.to_json() for k in self.keys.values()],
        }


# --------------------------------------------------------------------------- search


def _info_class(op: Op) -> Hashable:
    """Info ops of one class are interchangeable: the same f, key and argument."""
    return (op.f, freeze(op.key), freeze(op.value))


@dataclass
class _Search:
    verdict: Verdict
    steps: int
    order: list[int] | None = None  # success: op positions in linearization order
    states: list[Hashable] | None = None  # success: state after each op of order
    blocked: int | None = None  # failure: position of the op whose return blocked deepest
    #: failure found without search: positions of the ops that, with ``blocked``, form
    #: a minimal set that cannot be linearized
    witness: list[int] | None = None


def _search(ops: Sequence[Op], model: Model, deadline: float | None,
            max_cache: int = MAX_CACHE, want_order: bool = False,
            max_steps: int | None = None) -> _Search:
    """Is this sequence of ok/info ops linearizable? (fail ops must be removed already).

    Long because it is the hot loop: one function with local variables only, no
    calls per step but the model's (cached) transitions; splitting it would cost a
    call per search step, the dominant cost in CPython.

    Entries: each op's call sits in one of three lists ordered by invoke — ok
    read-only ops, other ok ops, info ops — and each ok op's return in a fourth,
    ordered by completion. The first return still in its list (op R) bounds the
    candidates: the calls invoked before it. At each configuration:

    1. a read-only ok candidate legal in the current state is linearized at once and
       never backtracked over (partial-order reduction: moving such a read to the
       front of any valid continuation keeps it valid, since it changes no state and
       every op still pending returns after it was invoked);
    2. else each other ok candidate is tried, except one whose identical twin (same
       f, key, argument, output) is also a candidate and returns earlier: swapping
       the two in any valid order keeps it valid, so only the twin is tried;
    3. else each info candidate, as before: the oldest unused of its class only, a
       blind op never right after an info op, a configuration that used a superset
       of another's info ops pruned.

    Memo: per state, per (low, win), the info sets already explored (win: the ok ops
    linearized, as bits relative to ``low``, the oldest unlinearized ok op).
    """
    model = model.specialise(ops)
    n = len(ops)
    ok_ops = sorted((i for i in range(n) if ops[i].status == "ok"),
                    key=lambda i: ops[i].invoke_index)
    info_ops = sorted((i for i in range(n) if ops[i].status != "ok"),
                      key=lambda i: ops[i].invoke_index)
    inf = float("inf")
    HR, HW, HI, TAIL = n, n + 1, n + 2, n + 3  # list heads; one shared tail
    RH, RT = n, n + 1  # returns list head and tail
    inv: list[float] = [0.0] * (n + 4)
    comp: list[float] = [inf] * (n + 2)
    for i, op in enumerate(ops):
        inv[i] = op.invoke_index
        if op.status == "ok":
            comp[i] = op.complete_index  # type: ignore[assignment]
    inv[TAIL] = inf
    comp[RH] = -1
    is_read = [False] * n
    pos = [-1] * n  # ok op: its position in invoke order; info op: -1
    for p, i in enumerate(ok_ops):
        pos[i] = p
        is_read[i] = model.read_only(ops[i])
    nxt = [TAIL] * (n + 4)
    prv = [HR] * (n + 4)

    def link(head: int, members: list[int]) -> None:
        last = head
        for i in members:
            nxt[last] = i
            prv[i] = last
            last = i
        nxt[last] = TAIL

    link(HR, [i for i in ok_ops if is_read[i]])
    link(HW, [i for i in ok_ops if not is_read[i]])
    link(HI, info_ops)
    rnxt = [RT] * (n + 2)
    rprv = [RH] * (n + 2)
    last = RH
    for i in sorted(ok_ops, key=lambda i: comp[i]):
        rnxt[last] = i
        rprv[i] = last
        last = i
    rnxt[last] = RT
    comp[RT] = inf
    # twins (rule 2): identical ok ops that may be candidates together with i and return
    # earlier; info classes (rule 3): the previous info op of the same class.
    twins: list[list[int]] = [[] for _ in range(n)]
    by_class: dict[Hashable, list[int]] = {}
    for i in ok_ops:
        if not is_read[i]:
            op = ops[i]
            by_class.setdefault((_info_class(op), freeze(op.output)), []).append(i)
    for members in by_class.values():
        if len(members) > 1:
            members.sort(key=lambda i: comp[i])
            comps = [comp[i] for i in members]
            for j, i in enumerate(members):  # those completing within (inv[i], comp[i])
                twins[i] = members[bisect.bisect_right(comps, inv[i]):j]
    prev_same = [-1] * n
    blind = [False] * n
    ibit = [0] * n
    last_of_class: dict[Hashable, int] = {}
    for q, i in enumerate(info_ops):
        ibit[i] = 1 << q
        cls = _info_class(ops[i])
        prev_same[i] = last_of_class.get(cls, -1)
        blind[i] = model.blind(ops[i])
        last_of_class[cls] = i
    used = [False] * n
    trans: list[dict[int, int] | None] = [None] * n  # per op: state -> next state
    states: list[Hashable] = [model.init()]
    sid: dict[Hashable, int] = {states[0]: 0}
    caches: list[dict[tuple[int, int], Any]] = [{}]
    cached = 0
    step = model.step
    illegal = ILLEGAL

    # Overwrite pruning: need[q] counts the unlinearized ok ops that can only take
    # effect in state q; leaving q for another state is pointless while need[q] > 0
    # and no unused op can ever enter q again (with unique values: a read still to
    # come of the value about to be overwritten).
    need: list[int] = [0]
    producers: list[list[Hashable] | None] = [None]  # per state: its producer keys
    req = [-1] * n
    pkey: list[Hashable] = [None] * n
    unused_pk: dict[Hashable, int] = {}  # producer key -> unlinearized ops with it
    prune = True
    for i, op in enumerate(ops):
        pk = model.produce_key(op)
        if pk is ANY:
            prune = False
        elif pk is not None:
            pkey[i] = pk
            unused_pk[pk] = unused_pk.get(pk, 0) + 1
    if prune:
        for i in ok_ops:
            r = model.requires(ops[i])
            if r is not None:
                q = sid.get(r, -1)
                if q < 0:
                    q = sid[r] = len(states)
                    states.append(r)
                    caches.append({})
                    need.append(0)
                    producers.append(None)
                req[i] = q
                need[q] += 1
        by_pkey: dict[Hashable, list[int]] = {}
        for i in range(n):
            if pkey[i] is not None:
                by_pkey.setdefault(pkey[i], []).append(i)
        stale = _stale_op(ops, model, ok_ops, req, states, by_pkey)
        if stale is not None:
            return _Search(False, 0, blocked=stale[0], witness=stale[1])

    # Regions (a kv epoch): need_rg counts the unlinearized ok ops that need a region
    # that, once left, never comes back; state_rg[q] is q's region (-2: not computed).
    rg_ids: dict[Hashable, int] = {}
    need_rg: list[int] = []
    req_rg = [-1] * n
    for i in ok_ops:
        g = model.needs_region(ops[i])
        if g is not None:
            req_rg[i] = rg_ids.setdefault(g, len(rg_ids))
            if req_rg[i] == len(need_rg):
                need_rg.append(0)
            need_rg[req_rg[i]] += 1
    state_rg: list[int] = [-2]

    def region_of(q: int) -> int:
        while len(state_rg) <= q:
            state_rg.append(-2)
        g = state_rg[q]
        if g == -2:
            r = model.region(states[q])
            g = state_rg[q] = -1 if r is None else rg_ids.setdefault(r, len(rg_ids))
            while len(need_rg) < len(rg_ids):
                need_rg.append(0)
        return g

    def leaves_needed_region(s: int, ns: int, e: int) -> bool:
        g = region_of(s)
        return g >= 0 and need_rg[g] > (req_rg[e] == g) and region_of(ns) != g

    # For can_enter's timing test: per producer key its ops by invoke, per needed state
    # the ops needing it by completion, each with a pointer below which all are used.
    pk_list: dict[Hashable, list[int]] = {}
    for i in sorted(range(n), key=lambda i: inv[i]):
        if pkey[i] is not None:
            pk_list.setdefault(pkey[i], []).append(i)
    nd_list: dict[int, list[int]] = {}
    for i in sorted(ok_ops, key=lambda i: comp[i]):
        if req[i] >= 0:
            nd_list.setdefault(req[i], []).append(i)
    lpos = [0] * n  # position in its pk_list; npos: in its nd_list
    npos = [0] * n
    for lst in pk_list.values():
        for j, i in enumerate(lst):
            lpos[i] = j
    for lst in nd_list.values():
        for j, i in enumerate(lst):
            npos[i] = j
    pk_ptr = dict.fromkeys(pk_list, 0)
    nd_ptr = dict.fromkeys(nd_list, 0)

    def first_unused(lst: list[int], ptrs: dict[Any, int], key: Any, e: int) -> int:
        j = ptrs[key]
        while j < len(lst) and used[lst[j]]:
            j += 1
        ptrs[key] = j
        while j < len(lst) and (used[lst[j]] or lst[j] == e):
            j += 1
        return lst[j] if j < len(lst) else -1

    def can_enter(q: int, e: int) -> bool:
        """Can state q, about to be left by e, be entered again in time for the op
        needing it that completes first? (A producer must be invoked before that op
        completes, to be linearized before it.)"""
        keys = producers[q]
        if keys is None:
            keys = producers[q] = [k for k in model.producer_keys(states[q]) if k in unused_pk]
        own = pkey[e]
        if not any(unused_pk[k] > (k == own) for k in keys):
            return False
        r = first_unused(nd_list[q], nd_ptr, q, e)
        if r < 0:
            return True
        t = comp[r]
        for k in keys:
            p = first_unused(pk_list[k], pk_ptr, k, e)
            if p >= 0 and inv[p] < t:
                return True
        return False

    blind_any = [model.blind(op) for op in ops]

    def info_useful(e: int, ns: int, bound: float) -> bool:
        """Info op e, about to be linearized: is there a candidate that is not blind and
        legal right after it? An info op never expires, so it can always wait until
        just before the op that needs its effect; if only a blind op could follow it,
        it was pointless (the configuration without it is explored anyway)."""
        for head in (HR, HW, HI):
            y = nxt[head]
            while inv[y] < bound:
                if y != e and not blind_any[y] and trn(y, ns) >= 0:
                    return True
                y = nxt[y]
        return False

    def trn(e: int, s: int) -> int:
        tr = trans[e]
        if tr is None:
            tr = trans[e] = {}
        ns = tr.get(s, -2)
        if ns == -2:
            nxt_state = step(states[s], ops[e])
            if nxt_state is illegal:
                ns = -1
            else:
                ns = sid.get(nxt_state, -1)
                if ns < 0:
                    ns = len(states)
                    sid[nxt_state] = ns
                    states.append(nxt_state)
                    caches.append({})
                    need.append(0)
                    producers.append(None)
            tr[s] = ns
        return ns

    def first_tries(r: int, s: int, bound: float) -> list[int]:
        """Just in time: R's own op, or if R is a read, the candidates after which it
        would be legal; tried before the rest."""
        if not is_read[r]:
            return [r]
        out = []
        e = nxt[HW]
        while inv[e] < bound:
            ns = trn(e, s)
            if ns >= 0 and trn(r, ns) >= 0:
                out.append(e)
            e = nxt[e]
        return out

    s = 0  # current state id
    low = 0  # position of the oldest unlinearized ok op
    win = 0  # ok ops linearized, as bits relative to `low`
    ib = 0  # info ops linearized
    top: tuple | None = None  # frames: (op, phase, state, low, win, ib, parent)
    depth = 0
    best_depth = -1
    blocked = -1
    steps = 0
    R = rnxt[RH]
    bound = comp[R]
    ph = 0  # 0 reads, 1 first tries, 2 other ok ops, 3 info ops
    pre: list[int] = []
    pi = 0
    e = nxt[HR]
    while True:
        steps += 1
        if not steps & 0x3FFF and ((deadline is not None and time.monotonic() > deadline)
                                   or (max_steps is not None and steps >= max_steps)):
            return _Search(UNKNOWN, steps)
        if R == RT:
            break  # every ok op is linearized
        if ph == 1:
            if pi < len(pre):
                e = pre[pi]
                pi += 1
            else:
                ph = 2
                e = nxt[HW]
                continue
        elif inv[e] > bound:  # this list's candidates are exhausted
            if ph == 0:
                ph = 1
                pre = first_tries(R, s, bound)
                pi = 0
                continue
            if ph == 2:
                ph = 3
                e = nxt[HI]
                continue
            # backtrack (over forced reads too: their parent fails with them)
            while True:
                if depth > best_depth:
                    best_depth = depth
                    blocked = R
                if top is None:
                    return _Search(False, steps, blocked=blocked)
                ce, ph, s, low, win, ib, top = top
                depth -= 1
                if pos[ce] >= 0:
                    rprv[rnxt[ce]] = ce
                    rnxt[rprv[ce]] = ce
                used[ce] = False
                if req[ce] >= 0:
                    need[req[ce]] += 1
                    if npos[ce] < nd_ptr[req[ce]]:
                        nd_ptr[req[ce]] = npos[ce]
                if req_rg[ce] >= 0:
                    need_rg[req_rg[ce]] += 1
                if pkey[ce] is not None:
                    unused_pk[pkey[ce]] += 1
                    if lpos[ce] < pk_ptr[pkey[ce]]:
                        pk_ptr[pkey[ce]] = lpos[ce]
                nxt[prv[ce]] = ce
                prv[nxt[ce]] = ce
                R = rnxt[RH]
                bound = comp[R]
                if ph:
                    break
            if ph == 1:
                pre = first_tries(R, s, bound)
                pi = pre.index(ce) + 1
                continue
            e = nxt[ce]
            continue
        if ph >= 1 and ph < 3:
            tw = twins[e]
            if tw:
                skip = False
                for t in tw:
                    if not used[t] and inv[t] < bound:
                        skip = True
                        break
                if skip:
                    e = nxt[e]
                    continue
        elif ph == 3:
            p = prev_same[e]
            if (p >= 0 and not used[p]) or (blind[e] and top is not None and top[1] == 3):
                # An older op of its class is unused: that one stands for both. Or a
                # blind op right after an info op: that info op was then pointless.
                e = nxt[e]
                continue
        tr = trans[e]
        ns = -2 if tr is None else tr.get(s, -2)
        if ns == -2:
            ns = trn(e, s)
        if ns < 0 or (prune and ns != s and (
                (need[s] > (req[e] == s) and not can_enter(s, e))
                or (need_rg and leaves_needed_region(s, ns, e)))) or (
                ph == 3 and not info_useful(e, ns, bound)):
            e = nxt[e]
            continue
        p = pos[e]
        if p >= 0:
            p -= low
            if p:
                nwin = win | (1 << p)
                nlow = low
            else:
                nwin = win | 1
                k = (nwin ^ (nwin + 1)).bit_length() - 1  # trailing ones
                nwin >>= k
                nlow = low + k
            nib = ib
        else:
            nwin = win
            nlow = low
            nib = ib | ibit[e]
        c = caches[ns]
        key = (nlow, nwin)
        seen = c.get(key)
        fresh = True
        if seen is None:
            c[key] = nib
        elif type(seen) is int:
            if seen & ~nib == 0:
                fresh = False
            else:
                c[key] = [seen, nib]
        else:
            for old in seen:
                if old & ~nib == 0:
                    fresh = False
                    break
            else:
                seen.append(nib)
        if not fresh:
            if ph == 0:  # a forced read leads where we failed before: so does this
                e = TAIL
                bound = -1.0  # makes the next step backtrack (bound reset there)
                ph = 3
                continue
            e = nxt[e]
            continue
        cached += 1
        if cached > max_cache:
            for cc in caches:
                cc.clear()
            cached = 0
        top = (e, ph, s, low, win, ib, top)
        depth += 1
        s = ns
        low = nlow
        win = nwin
        ib = nib
        nxt[prv[e]] = nxt[e]
        prv[nxt[e]] = prv[e]
        if pos[e] >= 0:
            rnxt[rprv[e]] = rnxt[e]
            rprv[rnxt[e]] = rprv[e]
            R = rnxt[RH]
            bound = comp[R]
        used[e] = True
        if req[e] >= 0:
            need[req[e]] -= 1
        if req_rg[e] >= 0:
            need_rg[req_rg[e]] -= 1
        if pkey[e] is not None:
            unused_pk[pkey[e]] -= 1
        ph = 0
        e = nxt[HR]
    res = _Search(True, steps)
    if want_order:
        order: list[int] = []
        sts: list[Hashable] = []
        cur_state = s
        f = top
        while f is not None:
            order.append(f[0])
            sts.append(states[cur_state])
            cur_state = f[2]
            f = f[6]
        order.reverse()
        sts.reverse()
        res.order = order
        res.states = sts
    return res


def _stale_op(ops: Sequence[Op], model: Model, ok_ops: list[int], req: list[int],
              states: list[Hashable], by_pkey: dict[Hashable, list[int]]
              ) -> tuple[int, list[int]] | None:
    """An ok op that can never take effect, found without search (the one that
    completes first), with its witnesses, else None: it needs state q, and every op
    that can enter q (and the initial state, if it is q) is followed, in real time,
    by an ok op that leaves q and completes before this op began. The witnesses are
    those producers and overwriters: with the op, a minimal set that cannot be
    linearized. What a completed read pins down: with unique values this finds any
    stale read in time linear in its window."""
    changers = sorted((i for i in ok_ops if model.produce_key(ops[i]) is not None),
                      key=lambda i: ops[i].invoke_index)
    invs = [ops[i].invoke_index for i in changers]
    init = states[0]
    cache: dict[int, tuple[set[int], list[tuple[int, int | None]]]] = {}
    for r in sorted(ok_ops, key=lambda i: ops[i].complete_index):  # type: ignore[arg-type, return-value]
        if model.impossible(ops[r]):
            return r, []
        q = req[r]
        if q < 0:
            continue
        start = ops[r].invoke_index
        known = cache.get(q)
        if known is None:
            prods = {i for k in model.producer_keys(states[q]) for i in by_pkey.get(k, ())}
            if len(prods) > 8:  # values are not unique: leave it to the search
                known = cache[q] = (prods, [(-1, None)])
            else:
                after = [(p, ops[p].complete_index if ops[p].status == "ok" else None)
                         for p in sorted(prods)]
                if states[q] == init:
                    after.append((-1, -1))
                known = cache[q] = (prods, after)
        prods, after = known
        if any(a is None or a >= start for _, a in after):
            continue  # a producer may still be in flight when r begins
        witness: list[int] = []
        for p, a in after:
            x = _overwritten(ops, changers, invs, prods, a, start)  # type: ignore[arg-type]
            if x < 0:
                break
            witness += [p, x] if p >= 0 else [x]
        else:
            return r, witness
    return None


def _overwritten(ops: Sequence[Op], changers: list[int], invs: list[int], prods: set[int],
                 t: int, start: int) -> int:
    """Some ok op, not one of ``prods``, that changes the state and ran entirely
    within (t, start); -1 if none."""
    k = bisect.bisect_right(invs, t)
    while k < len(invs) and invs[k] < start:
        x = changers[k]
        if x not in prods and ops[x].complete_index < start:  # type: ignore[operator]
            return x
        k += 1
    return -1


@dataclass
class _Frontier:
    verdict: Verdict
    steps: int
    failed_op: int | None = None  # position of the op whose return left no configuration
    states_before: list[Hashable] | None = None  # possible states just before that return
    reason: str | None = None  # why the verdict is unknown


def _add(seen: dict[tuple[int, int], list[int]], stack: list[tuple[int, int, int]],
         s: int, okb: int, ib: int) -> None:
    """Record a configuration unless one with the same state and ok ops used a subset
    of its info ops; forget those it dominates."""
    lst = seen.get((s, okb))
    if lst is None:
        seen[(s, okb)] = [ib]
    else:
        for old in lst:
            if old & ~ib == 0:
                return
        lst[:] = [old for old in lst if ib & ~old != 0]
        lst.append(ib)
    stack.append((s, okb, ib))


class _FrontierEngine:
    """Just-in-time linearizability (Lowe 2017), breadth first: walk the events in
    order keeping every configuration (state, pending ok ops linearized, info ops
    used) the history so far allows; at an ok op's return keep the configurations
    that linearized it. The first return that leaves none is where linearizability
    breaks, found without revisiting the past. Info sets are kept as antichains: a
    configuration that used a superset of another's info ops is dominated."""

    def __init__(self, ops: Sequence[Op], model: Model,
                 max_configs: int | None = None) -> None:
        self.ops = ops
        self.model = model = model.specialise(ops)
        self.max_configs = MAX_FRONTIER if max_configs is None else max_configs
        self.states: list[Hashable] = [model.init()]
        self.sid: dict[Hashable, int] = {self.states[0]: 0}
        self.trans: list[dict[int, int]] = [{} for _ in ops]
        self.steps = 0

    def tr(self, i: int, s: int) -> int:
        t = self.trans[i]
        ns = t.get(s, -2)
        if ns == -2:
            st = self.model.step(self.states[s], self.ops[i])
            if st is ILLEGAL:
                ns = -1
            else:
                ns = self.sid.get(st, -1)
                if ns < 0:
                    ns = len(self.states)
                    self.sid[st] = ns
                    self.states.append(st)
            t[s] = ns
        return ns

    def run(self, deadline: float | None) -> _Frontier:
        """Walk the events. Over 80 lines: the hot loop keeps its state in locals (a
        method call per configuration would dominate in CPython)."""
        ops = self.ops
        evs: list[tuple[int, int, int]] = []
        for i, op in enumerate(ops):
            evs.append((op.invoke_index, 0, i))
            if op.status == "ok":
                evs.append((op.complete_index, 1, i))  # type: ignore[arg-type]
        evs.sort()
        configs: list[tuple[int, int, int]] = [(0, 0, 0)]
        free_bits: list[int] = []
        next_bit = 1
        slot: dict[int, int] = {}  # pending ok op -> its bit
        # Info ops by class (same f, key and argument: interchangeable once invoked). A class
        # is [representative op, bits of its invoked ops in invoke order, mask]; the
        # used ones are always the oldest, so the next to use is bits[popcount].
        classes: list[list[Any]] = []
        class_of: dict[Hashable, list[Any]] = {}
        n_info = 0
        tr = self.tr
        # per state: (number of classes when computed, [(bits, mask, next state)]) of
        # the info classes whose op is legal there
        legal: dict[int, tuple[int, list[tuple[list[int], int, int]]]] = {}
        for _idx, kind, i in evs:
            if deadline is not None and time.monotonic() > deadline:
                return _Frontier(UNKNOWN, self.steps)
            if kind == 0:
                if ops[i].status == "ok":
                    if free_bits:
                        slot[i] = free_bits.pop()
                    else:
                        slot[i] = next_bit
                        next_bit <<= 1
                else:
                    bit = 1 << n_info
                    n_info += 1
                    key = _info_class(ops[i])
                    c = class_of.get(key)
                    if c is None:
                        c = class_of[key] = [i, [], 0, self.model.blind(ops[i])]
                        classes.append(c)
                    c[1].append(bit)
                    c[2] |= bit
                continue
            x = slot.pop(i)
            pend = list(slot.items())
            pend.append((i, x))
            seen: dict[tuple[int, int], list[int]] = {}
            stack: list[tuple[int, int, int]] = []
            # Configurations whose last op is an info op are explored (they lead to ok
            # ops) but not kept: the one before that info burst is kept instead, and
            # can take the same burst later, since an info op never expires.
            okend: set[tuple[int, int, int]] = set(configs)
            for c in configs:
                _add(seen, stack, *c)
            while stack:
                s, okb, ib = stack.pop()
                self.steps += 1
                if not self.steps & 0x3FFF:
                    if deadline is not None and time.monotonic() > deadline:
                        return _Frontier(UNKNOWN, self.steps)
                    if len(seen) > self.max_configs:
                        return _Frontier(UNKNOWN, self.steps, reason=(
                            f"more than {self.max_configs:,} configurations at once "
                            "(too many concurrent unknown-outcome ops): memory limit"))
                for j, bit in pend:
                    if not okb & bit:
                        ns = tr(j, s)
                        if ns >= 0:
                            okend.add((ns, okb | bit, ib))
                            _add(seen, stack, ns, okb | bit, ib)
                moves = legal.get(s)
                if moves is None or moves[0] != len(classes):
                    moves = (len(classes), [(c[1], c[2], ns, c[3]) for c in classes
                                            if (ns := tr(c[0], s)) >= 0])
                    legal[s] = moves
                after_info = (s, okb, ib) not in okend
                for bits, mask, ns, is_blind in moves[1]:
                    if is_blind and after_info:
                        continue  # the info op before it would be pointless
                    used = (ib & mask).bit_count()
                    if used < len(bits):
                        nib = ib | bits[used]
                        lst = seen.get((ns, okb))
                        if lst is not None:
                            for old in lst:  # inlined _add's dominance test: the hot path
                                if old & ~nib == 0:
                                    break
                            else:
                                _add(seen, stack, ns, okb, nib)
                        else:
                            _add(seen, stack, ns, okb, nib)
            nconfigs = [(s, okb & ~x, ib) for (s, okb), lst in seen.items() if okb & x
                        for ib in lst if (s, okb, ib) in okend]
            if not nconfigs:
                return _Frontier(False, self.steps, failed_op=i,
                                 states_before=sorted({self.states[c[0]] for c in configs},
                                                      key=repr))
            configs = nconfigs
            free_bits.append(x)
        return _Frontier(True, self.steps)


# ------------------------------------------------------------------ per-key checking


def _relaxed(op: Op) -> Op:
    """The op as if its outcome were unknown."""
    return dataclasses.replace(op, status="info", output=None, complete_index=None,
                               complete_line=None, complete_time=None)


def checkable_ops(ops: Iterable[Op], model: Model) -> list[Op]:
    """Drop what constrains nothing: fail ops, and read-only ops of unknown outcome."""
    return [op for op in ops
            if op.status == "ok" or (op.status == "info" and not model.read_only(op))]


def _prefix(ops: Sequence[Op], model: Model, cut: int) -> list[Op]:
    """The history up to and including event index ``cut``: later invokes vanish, later
    completions become unknown outcomes."""
    out: list[Op] = []
    for op in ops:
        if op.invoke_index > cut:
            continue
        if op.status == "ok" and op.complete_index > cut:  # type: ignore[operator]
            if model.read_only(op):
                continue
            op = _relaxed(op)
        out.append(op)
    return out


def check_key(key: Any, ops: Sequence[Op], model: Model | str, deadline: float | None = None,
              explain: bool = True, explain_seconds: float = EXPLAIN_SECONDS,
              algorithm: str = "auto") -> KeyResult:
    """Check one key's ops (all statuses; fail and unknown reads are dropped here).

    Depth first search decides most histories at once (a linearizable one is found
    almost greedily). When it runs past its time budget — typically a violation after
    a long history, whose proof means revisiting the past — the breadth-first
    frontier search takes over for the remaining time.
    """
    model = get_model(model)
    t0 = time.monotonic()
    cops = checkable_ops(ops, model)
    unseen = model.unobserved_info(cops)
    if unseen:  # an info op nothing observed: linearized at the end, i.e. left out
        cops = [op for op in cops if op.id not in unseen]
    frontier: _Frontier | None = None
    if algorithm == "frontier":
        res = _Search(UNKNOWN, 0)
    elif algorithm == "dfs":
        res = _search(cops, model, deadline)
    else:
        stop = time.monotonic() + max(DFS_SECONDS, len(cops) * DFS_SECONDS_PER_OP)
        res = _search(cops, model, stop if deadline is None else min(stop, deadline))
    verdict = res.verdict
    steps = res.steps
    if verdict == UNKNOWN and algorithm != "dfs" and (
            deadline is None or time.monotonic() < deadline):
        frontier = _FrontierEngine(cops, model).run(deadline)
        verdict = frontier.verdict
        steps += frontier.steps
        if verdict == UNKNOWN and algorithm == "auto" and (
                deadline is None or time.monotonic() < deadline):
            # the frontier hit its memory bound: back to depth first, which always
            # ends (its memo is bounded), for as long as the time limit allows
            res = _search(cops, model, deadline)
            verdict = res.verdict
            steps += res.steps
            if verdict != UNKNOWN:
                frontier = None
    kr = KeyResult(key=key, valid=verdict, ops=len(cops),
                   info_ops=sum(1 for o in cops if o.status == "info"), steps=steps)
    if verdict == UNKNOWN:
        kr.reason = (frontier.reason if frontier is not None and frontier.reason
                     else "time limit reached")
    elif verdict is False and explain:
        kr.failure = _explain(key, cops, model, res, frontier,
                              time.monotonic() + explain_seconds)
    kr.elapsed = time.monotonic() - t0
    return kr


def _explain(key: Any, ops: list[Op], model: Model, first: _Search,
             frontier: _Frontier | None, deadline: float) -> Failure:
    """Find the first completion that breaks linearizability, and a minimal failing set.

    Over 80 lines: locating, the witness order and shrinking share the prefix cut and
    the deadline; as separate functions they would pass a dozen values around.

    1. The ok completions c_1 < c_2 < ... ; prefix P_k (events up to c_k) is
       linearizable for small k and not for k = all, and linearizability is
       prefix-closed. The frontier search names the least k with P_k not
       linearizable directly (the first return that leaves no configuration); if it
       runs out of time, a binary search over k does. Op Y completes at c_k, and
       P_{k-1} is the longest linearizable prefix.
    2. Within P_k, shrink: relax each other ok op (nearest first, at most
       EXPLAIN_WINDOW of them) to "unknown outcome"; keep it relaxed if P_k still
       cannot be linearized. What stays ok is the minimal set, Y included (relaxing Y
       gives P_{k-1}, which is linearizable). Checks that run out of time count as
       "needed", so the set stays a true failing set, only maybe not minimal.
    """
    comps = sorted(op.complete_index for op in ops if op.status == "ok")  # type: ignore[misc]
    by_complete = {op.complete_index: op for op in ops if op.status == "ok"}
    complete = True

    def linearizable(cut: int) -> Verdict:
        return _decide(_prefix(ops, model, cut), model, deadline)

    # 1. least failing prefix; hi fails (the whole history), lo passes (nothing)
    lo, hi = -1, len(comps) - 1
    if frontier is None or frontier.verdict is not False:
        # found without search: the frontier only adds the possible states, if quick
        budget = EXPLAIN_SECONDS / (2 if first.witness is None else 100)
        frontier = _FrontierEngine(ops, model, max_configs=MAX_FRONTIER // 10).run(
            min(deadline, time.monotonic() + budget))
    probes: list[int] = []
    located = True
    if frontier is not None and frontier.verdict is False and frontier.failed_op is not None:
        hi = comps.index(ops[frontier.failed_op].complete_index)  # type: ignore[arg-type]
        lo = hi - 1
    elif first.blocked is not None and first.blocked >= 0:
        hint = comps.index(ops[first.blocked].complete_index)  # type: ignore[arg-type]
        probes = [hint, hint - 1]
    while hi - lo > 1:
        mid = probes.pop(0) if probes else (lo + hi) // 2
        if not lo < mid < hi:
            continue
        v = linearizable(comps[mid])
        if v is True:
            lo = mid
        elif v is False:
            hi = mid
        else:
            complete = located = False
            break
    y = by_complete[comps[hi]]
    cut = comps[hi]
    prefix_ops = hi  # ok completions in the linearizable prefix
    witness: list[tuple[Op, str]] = []
    if lo >= 0 and complete:
        w = _search(_prefix(ops, model, comps[lo]), model, deadline, want_order=True)
        if w.verdict is True and w.order is not None and w.states is not None:
            pre = _prefix(ops, model, comps[lo])
            tail = list(zip(w.order, w.states, strict=True))[-12:]
            witness = [(pre[i], model.describe_state(st)) for i, st in tail]

    # 2. shrink within P_k (unless found without search: its witnesses are the set)
    base = _prefix(ops, model, cut)
    others = [op for op in base if op.status == "ok" and op.id != y.id]
    others.sort(key=lambda o: -o.complete_index)  # type: ignore[operator]
    window = others[:EXPLAIN_WINDOW]
    context = len(others) - len(window)
    relaxed: set[int] = set()
    by_witness = (first.witness is not None and first.blocked is not None
                  and ops[first.blocked].id == y.id)
    if by_witness:
        keep = {ops[i].id for i in first.witness}  # type: ignore[union-attr]
        window = [ops[i] for i in first.witness]  # type: ignore[union-attr]
        relaxed = {op.id for op in others if op.id not in keep}
        context = 0
    for cand_op in window:  # (by witness: only checks that each one is needed)
        if time.monotonic() > deadline:
            complete = False
            break
        trial = relaxed | {cand_op.id}
        hist = [op for op in base if op.id not in trial]
        hist += [_relaxed(op) for op in base if op.id in trial and not model.read_only(op)]
        v = _decide(hist, model, min(deadline, time.monotonic() + 1.0))
        if v is False:
            relaxed = trial
        elif v == UNKNOWN:
            # Too long to decide (a long history): show Y's neighbourhood instead.
            complete = False
            break
    kept = [op for op in window if op.id not in relaxed]
    if not complete:
        near = [op for op in kept if op.complete_index > y.invoke_index]  # type: ignore[operator]
        before = [op for op in kept if op.complete_index < y.invoke_index][:6]  # type: ignore[operator]
        kept = near + before
    minimal = [y, *kept]
    minimal.sort(key=lambda o: o.invoke_index)
    descs = {o.id: model.describe(o) for o in [*minimal, y, *(w for w, _ in witness)]}
    possible = None
    if frontier is not None and frontier.verdict is False and frontier.states_before is not None:
        possible = [model.describe_state(st) for st in frontier.states_before]
    return Failure(key=key, op=y, minimal=minimal, prefix_index=cut, prefix_ops=prefix_ops,
                   linearization=witness, context_ops=context, minimal_complete=complete,
                   descriptions=descs, states_before=possible, located=located)


def _decide(ops: Sequence[Op], model: Model, deadline: float | None) -> Verdict:
    """Depth first with a step budget (fast when linearizable), then the frontier
    search (fast to refute)."""
    unseen = model.unobserved_info(ops)
    if unseen:
        ops = [op for op in ops if op.id not in unseen]
    stop = time.monotonic() + max(DFS_SECONDS / 10, len(ops) * DFS_SECONDS_PER_OP / 5)
    res = _search(ops, model, min(stop, deadline) if deadline is not None else stop)
    if res.verdict != UNKNOWN or (deadline is not None and time.monotonic() >= deadline):
        return res.verdict
    return _FrontierEngine(ops, model).run(deadline).verdict


# ----------------------------------------------------------------------- public API


def prepare_ops(events: Sequence[dict[str, Any]] | Sequence[Op], model: Model | str,
                lines: list[int] | None = None) -> list[Op]:
    """Validate events (or take already paired ops) and check each op fits the model."""
    model = get_model(model)
    if events and isinstance(events[0], Op):
        ops = list(events)  # type: ignore[arg-type]
    else:
        evs = validate_events(events, lines)  # type: ignore[arg-type]
        ops = pair_operations(evs, lines)
    for op in ops:
        err = model.validate(op)
        if err is not None:
            line = op.complete_line if op.status == "ok" and "ok" in err else op.invoke_line
            raise HistoryError(err, line)
    return ops


def check_history(events: Sequence[dict[str, Any]] | Sequence[Op],
                  model: Model | str = "cas-register", time_limit: float | None = None, *,
                  workers: int | None = None, explain: bool = True,
                  lines: list[int] | None = None,
                  parallel_threshold: int = PARALLEL_THRESHOLD,
                  algorithm: str = "auto") -> CheckResult:
    """Check a history (event dicts as in docs/architecture.md#jepsen-lite,
    or paired Ops) for linearizability.

    Keys are checked independently; with at least ``parallel_threshold`` ops and more
    than one key they run in worker processes (``workers`` defaults to the CPU count).
    ``algorithm``: "auto" (depth first, then the frontier search past a step budget),
    "dfs" or "frontier" only.
    ``time_limit`` seconds after the start, unfinished keys are "unknown". The verdict
    is False if any key is not linearizable, else "unknown" if any key is unknown,
    else True. Raises HistoryError for a malformed history.
    """
    t0 = time.monotonic()
    if algorithm not in ("auto", "dfs", "frontier"):
        raise ValueError(f"algorithm must be auto, dfs or frontier, got {algorithm!r}")
    m = get_model(model)
    ops = prepare_ops(events, m, lines)
    deadline = t0 + time_limit if time_limit is not None else None
    by_key: dict[Any, list[Op]] = {}
    for op in ops:
        by_key.setdefault(m.partition_key(op), []).append(op)
    explain_s = min(EXPLAIN_SECONDS, time_limit) if time_limit else EXPLAIN_SECONDS
    n_workers = workers if workers is not None else (os.cpu_count() or 1)
    n_workers = max(1, min(n_workers, len(by_key)))
    results: dict[Any, KeyResult] = {}
    order = sorted(by_key, key=lambda k: -len(by_key[k]))
    if n_workers > 1 and len(ops) >= parallel_threshold:
        try:
            results = _check_parallel(by_key, order, m, deadline, explain, explain_s, n_workers,
                                      algorithm)
        except (cf.process.BrokenProcessPool, OSError) as e:
            log.warning("checker: worker processes failed (%s); checking in-process", e)
            results = {}
    for k in order:
        if k in results:
            continue
        if deadline is not None and time.monotonic() > deadline:
            results[k] = KeyResult(key=k, valid=UNKNOWN, reason="time limit reached")
            continue
        results[k] = check_key(k, by_key[k], m, deadline, explain, explain_s, algorithm)
    keys = {k: results[k] for k in by_key}  # history order of first appearance
    verdicts = [r.valid for r in keys.values()]
    valid: Verdict
    if any(v is False for v in verdicts):
        valid = False
    elif any(v == UNKNOWN for v in verdicts):
        valid = UNKNOWN
    else:
        valid = True
    counts: dict[str, int] = {"ok": 0, "fail": 0, "info": 0}
    for op in ops:
        counts[op.status] = counts.get(op.status, 0) + 1
    return CheckResult(valid=valid, model=m.name, keys=keys, elapsed=time.monotonic() - t0,
                       op_count=len(ops), ops_by_status=counts, ops=ops,
                       partition={op.id: k for k, kops in by_key.items() for op in kops})


_SHARED: dict[Any, list[Op]] = {}


def _check_shared(k: Any, m: Model, deadline: float | None, explain: bool, explain_s: float,
                  algorithm: str) -> KeyResult:
    """In a forked worker: the key's ops were inherited, not pickled."""
    return check_key(k, _SHARED[k], m, deadline, explain, explain_s, algorithm)


def _check_parallel(by_key: dict[Any, list[Op]], order: list[Any], m: Model,
                    deadline: float | None, explain: bool, explain_s: float,
                    n_workers: int, algorithm: str) -> dict[Any, KeyResult]:
    # fork: the workers inherit the ops (no pickling of 100,000 objects), and unlike
    # spawn/forkserver it does not re-import the caller's __main__.
    forking = "fork" in multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if forking else None)
    results: dict[Any, KeyResult] = {}
    if forking:
        _SHARED.clear()
        _SHARED.update(by_key)
    try:
        with cf.ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx) as pool:
            if forking:
                futs = {k: pool.submit(_check_shared, k, m, deadline, explain, explain_s,
                                       algorithm) for k in order}
            else:
                futs = {k: pool.submit(check_key, k, by_key[k], m, deadline, explain,
                                       explain_s, algorithm) for k in order}
            for k in order:
                results[k] = futs[k].result()
    finally:
        _SHARED.clear()
    return results


def check_file(path: str | os.PathLike[str], model: Model | str = "cas-register",
               time_limit: float | None = None, **kw: Any) -> CheckResult:
    """Read, validate and check a JSONL history file."""
    from jepsen_lite.history import read_lines

    events, lines = read_lines(path)  # check_history validates, once
    return check_history(events, model, time_limit, lines=lines, **kw)
