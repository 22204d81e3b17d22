"""The flows runtime: the Faust app and its patches (app, recovery, consumer), batching and the agents'
shared runtime (agents, tables, events, delivery, watchdog), what flows answer (results, grace, statecodec,
config) and flow registration from specs (spec, plan, register, worker). It names no flow: a flow is a
folder ``streams/<flow>/`` whose ``spec.py`` declares a :class:`~bizbus.streams.runtime.spec.FlowSpec`."""
