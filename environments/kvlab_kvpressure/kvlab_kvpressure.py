"""The verifiers plugin module of kvlab's KVPressure environment (taskset id
``kvlab-kvpressure``): ``verifiers`` imports it by that id and takes the Taskset
subclass it exports. The implementation is :mod:`kvlab.rl.verifiers_env`."""

from kvlab.rl.verifiers_env import (
    KVPressureTask,
    KVPressureTaskset,
    KVPressureTasksetConfig,
    KVPressureToolset,
    load_environment,
)

__all__ = ["KVPressureTaskset"]

# not in __all__ (verifiers takes exactly one Taskset subclass from it), importable
_public = (KVPressureTask, KVPressureTasksetConfig, KVPressureToolset, load_environment)
