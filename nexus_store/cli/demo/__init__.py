"""``nexus-store demo``: the command (:mod:`.command`) and the workload it runs
(:mod:`.workload`), kept out of the library package."""
