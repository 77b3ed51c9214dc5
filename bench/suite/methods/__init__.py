"""The compared methods by name; each maps a `Context` to an `Outcome` (incumbent + search cost)."""

from __future__ import annotations

from collections.abc import Callable

from bench.suite.methods.autohas import hpo_only, joint, joint_reinforce, nas_only, nas_then_hpo
from bench.suite.methods.base import Context, Outcome
from bench.suite.methods.sharing import weight_sharing
from bench.suite.methods.trials import random_search, tpe, tpe_hyperband

Method = Callable[[Context], Outcome]

#: name -> method, in report order (the AutoHAS default first: every ratio is relative to it)
METHODS: dict[str, Method] = {
    "autohas": joint,
    "autohas-reinforce": joint_reinforce,
    "autohas-nas": nas_only,
    "autohas-hpo": hpo_only,
    "nas-then-hpo": nas_then_hpo,
    "random": random_search,
    "tpe": tpe,
    "tpe-hyperband": tpe_hyperband,
    "ws-random": weight_sharing,
}
#: the methods that train configurations one by one (they have a best-so-far curve)
TRIAL_METHODS = ("random", "tpe", "tpe-hyperband")
