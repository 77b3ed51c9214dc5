"""The numpy-only layer shared by the server, the exporter and the device SDK (no torch, ever).

Everything here is needed on a device too, so it ships in the device-only distribution.
"""
