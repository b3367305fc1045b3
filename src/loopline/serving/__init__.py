"""Serving support: request schema, champion holder, prediction log, HTTP guards.

The BentoML service in `serving/service.py` wires these together; everything here is
testable without a server.
"""
