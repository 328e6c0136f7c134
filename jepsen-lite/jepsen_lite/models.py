"""Models: the sequential specifications a history is checked against.

A model is a small object with ``init``, ``step``, ``partition_key`` and ``describe``
(plus ``validate`` and ``read_only`` hints). This module owns the two models of
docs/architecture.md#jepsen-lite — ``cas-register`` and ``kv`` — and the registry of
models by name. A model never searches, never reads files and never keeps state between calls:
states are immutable, hashable values, so the checker can intern and memoise them.

To add a model, subclass :class:`Model` (module-level, so it pickles into worker
processes) and pass an instance to ``check_history(..., model=MyModel())``.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

from jepsen_lite.history import Op


class _Illegal:
    __slots__ = ()

    def __repr__(self) -> str:
        return "ILLEGAL"


#: What ``step`` returns when an operation cannot happen in a state.
ILLEGAL: Any = _Illegal()


#: ``produce_key`` of an op that may enter any state.
ANY: Any = ("#any",)


def freeze(v: Any) -> Hashable:
    """A hashable, type-faithful form of a JSON value (lists become tuples; booleans
    are kept apart from the integers 0 and 1 they would otherwise equal)."""
    if isinstance(v, bool):
        return ("#bool", v)
    if isinstance(v, list):
        return ("#list", *(freeze(x) for x in v))
    if isinstance(v, dict):
        return ("#dict", *sorted((str(k), freeze(x)) for k, x in v.items()))
    return v


def thaw(v: Any) -> Any:
    """The JSON value a frozen value came from."""
    if isinstance(v, tuple) and v:
        tag = v[0]
        if tag == "#bool":
            return v[1]
        if tag == "#list":
            return [thaw(x) for x in v[1:]]
        if tag == "#dict":
            return {k: thaw(x) for k, x in v[1:]}
    return v


class Model:
    """The interface. ``step`` is only ever asked about an op that took effect:

    - an ``ok`` op, with its observed ``output``;
    - an ``info`` op, whose output is unknown (``op.status == "info"``): step must
      allow whatever result it would have had. (Whether it took effect at all is the
      checker's business: it may also leave the op out.)

    ``step`` may look at the op's ``f``, ``key``, ``value``, ``status`` and ``output``
    only: the checker treats info ops with the same f, key and value as interchangeable.
    """

    name = "model"

    def init(self) -> Hashable:
        raise NotImplementedError

    def step(self, state: Hashable, op: Op) -> Hashable:
        """The state after ``op`` in ``state``, or ILLEGAL."""
        raise NotImplementedError

    def partition_key(self, op: Op) -> Hashable:
        """Ops with different keys are independent (P-compositionality)."""
        return op.key

    def validate(self, op: Op) -> str | None:
        """An error message if the op makes no sense for this model, else None."""
        return None

    def read_only(self, op: Op) -> bool:
        """True if the op never changes the state: such an op of unknown outcome
        constrains nothing and is dropped."""
        return False

    def blind(self, op: Op) -> bool:
        """True if the op is legal in every state and its next state does not depend
        on the state (a blind write). Lets the checker skip useless orders: an info op
        right before a blind one could as well not have happened."""
        return False

    def requires(self, op: Op) -> Hashable | None:
        """The one state an ok op can take effect in (a read of v: v), else None.
        With :meth:`produce_key` it lets the checker prune an order that overwrites a
        state some op still needs when nothing left can bring that state back."""
        return None

    def produce_key(self, op: Op) -> Hashable:
        """A key such that the op, taking effect in any state, can only enter a state
        ``s`` different from the one it was in if the key is in ``producer_keys(s)``;
        None if it never changes the state. ANY (the default) means it may enter any
        state: no pruning then."""
        return ANY

    def producer_keys(self, state: Hashable) -> list[Hashable]:
        """The produce keys of the ops that could enter ``state`` (see produce_key)."""
        return []

    def specialise(self, ops: Sequence[Op]) -> Model:
        """This model, told the ops of one history (one key's checkable ops): a model
        may return a variant whose ``step`` also refuses transitions that the rest
        of the history rules out, or merges states nothing can tell apart. Called
        again for every op set checked; the default knows nothing more."""
        return self

    def impossible(self, op: Op) -> bool:
        """True if an ok op can never take effect in this history (specialised
        models only): the checker then refutes the history without search."""
        return False

    def unobserved_info(self, ops: Sequence[Op]) -> set[int]:
        """Ids of info ops whose effect nothing in ``ops`` could observe: taking
        effect or not changes no verdict, so the checker drops them (as if they
        took effect at the end). Default: none."""
        return set()

    def region(self, state: Hashable) -> Hashable | None:
        """A region of states that, once left, is never entered again in this history
        (specialised models only), else None. With :meth:`needs_region`, lets the
        checker refuse to leave a region an unlinearized ok op still needs."""
        return None

    def needs_region(self, op: Op) -> Hashable | None:
        """The region an ok op can only take effect in, else None."""
        return None

    def describe(self, op: Op) -> str:
        """A short human form of the op, for reports."""
        out = f" -> {op.output!r}" if op.status == "ok" else ""
        return f"{op.f} {op.value!r}{out}"

    def describe_state(self, state: Hashable) -> str:
        return repr(thaw(state))

    def __repr__(self) -> str:
        return f"<model {self.name}>"


class CasRegister(Model):
    """One register per key, initially null: read, write v, cas [old, new]."""

    name = "cas-register"
    FS = ("read", "write", "cas")

    def init(self) -> Hashable:
        return None

    def step(self, state: Hashable, op: Op) -> Hashable:
        f = op.f
        if f == "read":
            if op.status != "ok":
                return state
            return state if freeze(op.output) == state else ILLEGAL
        if f == "write":
            return freeze(op.value)
        # cas: an ok (or, if it happened at all, an info) cas succeeded
        old, new = op.value
        return freeze(new) if freeze(old) == state else ILLEGAL

    def validate(self, op: Op) -> str | None:
        if op.f not in self.FS:
            return f"cas-register has no operation {op.f!r} (expected read, write or cas)"
        if op.f == "cas":
            if not (isinstance(op.value, list) and len(op.value) == 2):
                return f"cas takes [old, new], got {op.value!r}"
            if op.status == "ok" and op.output != op.value:
                return f"an ok cas must repeat [old, new] {op.value!r}, got {op.output!r}"
        if op.f == "write" and op.status == "ok" and op.output != op.value:
            return f"an ok write must repeat its value {op.value!r}, got {op.output!r}"
        return None

    def read_only(self, op: Op) -> bool:
        return op.f == "read"

    def blind(self, op: Op) -> bool:
        return op.f == "write"

    def requires(self, op: Op) -> Hashable | None:
        if op.status != "ok":
            return None
        if op.f == "read":
            return freeze(op.output)
        return freeze(op.value[0]) if op.f == "cas" else None

    def produce_key(self, op: Op) -> Hashable:
        if op.f == "read":
            return None
        return ("v", freeze(op.value if op.f == "write" else op.value[1]))

    def producer_keys(self, state: Hashable) -> list[Hashable]:
        return [("v", state)]

    def unobserved_info(self, ops: Sequence[Op]) -> set[int]:
        """Info writes and cas whose new value no ok read returned and no cas (of any
        outcome) expected: right after one only a write could follow, so a valid order
        without it exists whenever one with it does."""
        seen = {freeze(o.output) for o in ops if o.f == "read" and o.status == "ok"}
        seen |= {freeze(o.value[0]) for o in ops if o.f == "cas"}
        return {o.id for o in ops if o.status == "info" and o.f in ("write", "cas")
                and freeze(o.value if o.f == "write" else o.value[1]) not in seen}

    def describe(self, op: Op) -> str:
        if op.f == "read":
            return f"read -> {_v(op.output)}" if op.status == "ok" else "read ?"
        if op.f == "write":
            return f"write {_v(op.value)}"
        old, new = op.value
        return f"cas {_v(old)}->{_v(new)}"


class KV(Model):
    """One string per key, initially "": get, put v, append v."""

    name = "kv"
    FS = ("get", "put", "append")

    def init(self) -> Hashable:
        return ""

    def step(self, state: Hashable, op: Op) -> Hashable:
        f = op.f
        if f == "get":
            if op.status != "ok":
                return state
            return state if op.output == state else ILLEGAL
        if f == "put":
            return op.value
        return state + op.value  # type: ignore[operator]

    def validate(self, op: Op) -> str | None:
        if op.f not in self.FS:
            return f"kv has no operation {op.f!r} (expected get, put or append)"
        if op.f in ("put", "append"):
            if not isinstance(op.value, str):
                return f"{op.f} takes a string, got {op.value!r}"
            if op.status == "ok" and op.output != op.value:
                return f"an ok {op.f} must repeat its value {op.value!r}, got {op.output!r}"
        if op.f == "get" and op.status == "ok" and not isinstance(op.output, str):
            return f"an ok get returns a string, got {op.output!r}"
        return None

    def read_only(self, op: Op) -> bool:
        return op.f == "get"

    def blind(self, op: Op) -> bool:
        return op.f == "put"

    def requires(self, op: Op) -> Hashable | None:
        return op.output if op.f == "get" and op.status == "ok" else None

    def produce_key(self, op: Op) -> Hashable:
        if op.f == "get" or (op.f == "append" and op.value == ""):
            return None
        return (op.f, op.value)

    def producer_keys(self, state: Hashable) -> list[Hashable]:
        s: str = state  # type: ignore[assignment]
        return [("put", s), *(("append", s[i:]) for i in range(len(s)))]

    def describe(self, op: Op) -> str:
        if op.f == "get":
            return f"get -> {op.output!r}" if op.status == "ok" else "get ?"
        return f"{op.f} {op.value!r}"

    def describe_state(self, state: Hashable) -> str:
        return repr(state)

    def unobserved_info(self, ops: Sequence[Op]) -> set[int]:
        """Info appends whose value is in no ok get's output, and info puts no ok get's
        output starts with: until the next put every state holds that value (at its
        start, for a put), so no get came between it and the next put, and a valid
        order without it exists whenever one with it does."""
        gets = [o.output for o in ops if o.f == "get" and o.status == "ok"
                and isinstance(o.output, str)]
        out = set()
        for o in ops:
            if o.status != "info" or not isinstance(o.value, str) or not o.value:
                continue
            if (o.f == "append" and not any(o.value in g for g in gets)) or (
                    o.f == "put" and not any(g.startswith(o.value) for g in gets)):
                out.add(o.id)
        return out

    def specialise(self, ops: Sequence[Op]) -> Model:
        vals = [op.value for op in ops if op.f in ("put", "append")]
        if len(set(vals)) != len(vals) or any(
                not isinstance(v, str) or not v or v.find(",") != len(v) - 1 for v in vals):
            return self
        return _KVHistory(ops)


#: The state of a kv key once it holds a value no get ever shows: every such state
#: behaves the same (no get can follow until a put), so the checker keeps one.
UNSEEN: Any = ("#unseen",)


class _KVHistory(KV):
    """KV specialised to a history whose put/append values are self-delimiting
    (distinct, non-empty, each ending in the one "," it holds, as jepsen-lite's
    generators write them). A state is then a unique sequence of values, and:

    - entering a state t with value x is hopeless if a get showing x does not start
      with t (x exists only from now to the next put, and states only grow);
    - a value no get shows makes the state UNSEEN: no get can follow before a put,
      and a shown value appended then is hopeless by the rule above;
    - a get showing a value twice, a value nobody wrote, or a put's value anywhere but
      first, is impossible;
    - the put that began a state (its epoch) is never repeated: an epoch a get still
      needs must not be left.
    """

    def __init__(self, ops: Sequence[Op]) -> None:
        self.shown: dict[str, list[str]] = {}
        self.written = {op.value: op.f for op in ops if op.f in ("put", "append")}
        self.bad: set[str] = set()
        for op in ops:
            if op.f == "get" and op.status == "ok" and isinstance(op.output, str):
                toks = [t + "," for t in op.output.split(",")[:-1]]
                if "".join(toks) != op.output or len(set(toks)) != len(toks) or not all(
                        self.written.get(t) == "append"
                        or (i == 0 and self.written.get(t) == "put")
                        for i, t in enumerate(toks)):
                    self.bad.add(op.output)
                for t in toks:
                    self.shown.setdefault(t, []).append(op.output)

    def impossible(self, op: Op) -> bool:
        return op.f == "get" and op.status == "ok" and op.output in self.bad

    def region(self, state: Hashable) -> Hashable | None:
        """The epoch: the put that began the state ("" before any), never repeated."""
        if state is UNSEEN:
            return None
        first = state[:state.find(",") + 1]  # type: ignore[index, union-attr]
        return first if self.written.get(first) == "put" else ""

    def needs_region(self, op: Op) -> Hashable | None:
        if op.f != "get" or op.status != "ok" or op.output in self.bad:
            return None
        return self.region(op.output)

    def step(self, state: Hashable, op: Op) -> Hashable:
        f = op.f
        if state is UNSEEN and f != "put":
            if f == "get":
                return state if op.status != "ok" else ILLEGAL
            return ILLEGAL if op.value in self.shown else UNSEEN
        ns = super().step(state, op)
        if ns is ILLEGAL or f == "get":
            return ns
        gets = self.shown.get(op.value)
        if gets is None:
            return UNSEEN
        t: str = ns  # type: ignore[assignment]
        for g in gets:
            if not g.startswith(t):
                return ILLEGAL
        return ns

    def producer_keys(self, state: Hashable) -> list[Hashable]:
        return [] if state is UNSEEN else super().producer_keys(state)

    def describe_state(self, state: Hashable) -> str:
        return "(holds a value no get shows)" if state is UNSEEN else repr(state)


def _v(x: Any) -> str:
    return "null" if x is None else repr(x)


MODELS: dict[str, Model] = {"cas-register": CasRegister(), "kv": KV()}


def get_model(model: str | Model) -> Model:
    """A model by name, or the model object itself."""
    if isinstance(model, Model):
        return model
    try:
        return MODELS[model]
    except KeyError:
        raise ValueError(f"unknown model {model!r} (known: {', '.join(MODELS)})") from None


def simulate(model: Model | str = "cas-register", *, ops: int = 100, processes: int = 5,
             keys: int = 1, values: int = 5, seed: int = 0, crash: float = 0.0,
             time_step: int = 1000, unique: bool = False) -> list[dict[str, Any]]:
    """A linearizable history made by running ``model`` with random interleavings.

    Each op is invoked, takes effect at a random later moment (its linearization
    point, where its result is computed on the true state), then completes. With
    probability ``crash`` an op ends ``info`` instead (its effect may still happen
    later, or never) and its client continues under a new process id. A cas whose
    old value does not match fails (no effect). ``unique``: every written value is
    new (cas-register: 0, 1, 2, ...; kv: "v0,", "v1,", ...). For tests and benchmarks.
    Over 80 lines: one simulation loop whose closures share the true state.
    """
    import random

    m = get_model(model)
    rng = random.Random(seed)
    state: dict[Any, Any] = {}
    events: list[dict[str, Any]] = []
    # per slot: (process, op dict, phase) ; phase 0 = invoked, 1 = applied
    slots: list[list[Any]] = [[p, None, 0] for p in range(processes)]
    next_proc = processes
    pending_effects: list[dict[str, Any]] = []
    started = 0

    def emit(process: int, typ: str, f: str, key: Any, value: Any, **kw: Any) -> None:
        i = len(events)
        events.append({"index": i, "time": i * time_step, "process": process, "type": typ,
                       "f": f, "key": key, "value": value, **kw})

    def apply(op: dict[str, Any]) -> None:
        k = op["key"]
        cur = state.get(k, m.init())
        f, v = op["f"], op["value"]
        if f in ("read", "get"):
            op["out"] = cur
        elif f in ("write", "put"):
            state[k] = v
        elif f == "append":
            state[k] = cur + v
        elif f == "cas":
            if cur == v[0]:
                state[k] = v[1]
            else:
                op["failed"] = True

    def new_op() -> dict[str, Any]:
        k = f"k{rng.randrange(keys)}" if keys > 1 else "r"
        if m.name == "kv":
            f = rng.choice(("get", "put", "append"))
            v = None if f == "get" else rng.choice("abcdefgh"[:max(1, values)])
            if unique and v is not None:
                v = f"v{started},"
        else:
            f = rng.choice(("read", "write", "cas"))
            v = (None if f == "read" else rng.randrange(values) if f == "write"
                 else [rng.randrange(values), rng.randrange(values)])
            if f == "cas" and rng.random() < 0.3:
                v[0] = None if rng.random() < 0.2 else v[0]
            if unique and f == "write":
                v = started
            elif unique and f == "cas":
                v[1] = started
        return {"f": f, "key": k, "value": v}

    while started < ops or any(s[1] is not None for s in slots):
        if pending_effects and rng.random() < 0.05:
            apply(pending_effects.pop(rng.randrange(len(pending_effects))))
        slot = slots[rng.randrange(processes)]
        proc, op, phase = slot
        if op is None:
            if started >= ops:
                continue
            op = new_op()
            started += 1
            emit(proc, "invoke", op["f"], op["key"], op["value"])
            slot[1], slot[2] = op, 0
        elif phase == 0:
            if crash and rng.random() < crash:
                emit(proc, "info", op["f"], op["key"], op["value"], error="timeout")
                if op["f"] not in ("read", "get") and rng.random() < 0.5:
                    pending_effects.append(op)
                slot[0], slot[1] = next_proc, None
                next_proc += 1
            else:
                apply(op)
                slot[2] = 1
        else:
            if op.get("failed"):
                emit(proc, "fail", op["f"], op["key"], op["value"], error="cas-mismatch")
            elif op["f"] in ("read", "get"):
                emit(proc, "ok", op["f"], op["key"], op["out"])
            else:
                emit(proc, "ok", op["f"], op["key"], op["value"])
            slot[1] = None
    return events
