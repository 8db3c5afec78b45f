"""Calibrating the simulator's clock from measured runs (``kvlab calibrate``).

:mod:`kvlab.calibrate.fit` turns replay run directories into step observations and
fits a linear step cost to them; :class:`kvlab.sim.cost_model.CalibratedCost` runs it;
:func:`per_request_errors` measures how close a simulation comes to a real run.
"""

from kvlab.calibrate.errors import per_request_errors
from kvlab.calibrate.fit import Calibration, Observation, fit, load_calibration, observations

__all__ = [
    "Calibration",
    "Observation",
    "fit",
    "load_calibration",
    "observations",
    "per_request_errors",
]
