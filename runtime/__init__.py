"""The running pipeline: one stage replica per process (runner), who talks to whom (graph, plan),
and the supervisor that launches, watches and stops them."""
