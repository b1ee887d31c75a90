"""Data models of image signal processing: the static pipeline and its differentiable twin."""

from rawdrift.isp.static import REFERENCE_VIEW, VIEWS, parse_view, render_static
from rawdrift.isp.differentiable import ParametrizedISP, PARAMETER_GROUPS

__all__ = ["REFERENCE_VIEW", "VIEWS", "parse_view", "render_static", "ParametrizedISP", "PARAMETER_GROUPS"]
