"""Calibrating the simulator's clock from measured runs (``kvlab calibrate``).

:mod:`kvlab.calibrate.fit` turns replay run directories into step observations and
fits a linear step cost to them; :class:`kvlab.sim.cost_model.CalibratedCost` runs it.
"""

from kvlab.calibrate.fit import Calibration, Observation, fit, load_calibration, observations

__all__ = ["Calibration", "Observation", "fit", "load_calibration", "observations"]
