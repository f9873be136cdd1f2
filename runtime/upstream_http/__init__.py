"""A lean HTTP/1.1 client for the provider calls (runtime/upstream.py is its interface, and
says why the project has its own).

`pool.Pool`: the keep-alive connections of one origin (TCP, TLS). `connection`: one request
written and its answer read with httptools (llhttp). `decode`: gzip and deflate bodies.
"""
