"""The development stack the tests and the benchmarks share: servers and scratch data.

Not shipped: the wheel packages ``nexus_store*`` only.
"""
