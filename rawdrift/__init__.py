"""rawdrift: synthesize, measure and optimize dataset drift from raw sensor data.

The package is organised as one module per idea (see DESIGN.md):
``camera`` (raw layout and colour parameters), ``isp`` (static and differentiable data
models), ``sensor`` (photon / exposure model), ``sources`` (where raw data comes from).
"""

__version__ = "0.1.0"
