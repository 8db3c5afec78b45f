"""``kvlab monitor``: watch the KV cache of running servers through ``/metrics``.

* :mod:`kvlab.monitor.sampler`: one server, scrape by scrape (rates over the last
  interval, restarts, outages);
* :mod:`kvlab.monitor.histogram`: quantiles from histogram bucket increases;
* :mod:`kvlab.monitor.alerts`: threshold rules, their firing/resolved events, and
  the same rules as Prometheus alerting rules;
* :mod:`kvlab.monitor.stress_rules`: alert rules derived from a ``kvlab stress`` run;
* :mod:`kvlab.monitor.record`: a ``--record`` file read back, and its figures;
* :mod:`kvlab.monitor.dashboard`: the terminal dashboard (Rich);
* :mod:`kvlab.monitor.sim_metrics`: the simulator replayed on a wall clock as a
  vLLM-named ``/metrics`` endpoint.

Nothing here is imported by the core packages.
"""
