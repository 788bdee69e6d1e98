"""Signal preprocessing: streaming resample + band-pass/notch, quality flags, patch features."""

from .filters import FirDesign, design_bandpass_notch, design_fir, notch_harmonics
from .importance import FEATURE_NAMES, patch_features
from .quality import QualityAccumulator, QualityFlags, bad_seconds, channel_mask
from .resample import ResamplePlan, plan_resample
from .stream import PreprocessSpec, StreamingPreprocessor

__all__ = [
    "FEATURE_NAMES",
    "FirDesign",
    "PreprocessSpec",
    "QualityAccumulator",
    "QualityFlags",
    "ResamplePlan",
    "StreamingPreprocessor",
    "bad_seconds",
    "channel_mask",
    "design_bandpass_notch",
    "design_fir",
    "notch_harmonics",
    "patch_features",
    "plan_resample",
]
