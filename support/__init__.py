"""What the tests, the benchmarks and the demo share: real servers started on free
loopback ports (``processes``: the demo site, the coordinator under gunicorn; ``couch``:
a CouchDB-protocol server) and what /proc says about process trees (``proc``)."""
