"""Channel vocabulary, name normalization and montage planning.

    vocabulary   stable channel ids (resources/channel_vocabulary.tsv)
    names        raw recording names -> canonical names
    channel_sets named target sets (resources/channel_sets.yaml)
    positions    electrode layouts in a common head-sphere frame
    mapping      MontagePlan: which source rows build each target
"""

from pipeline.montage.channel_sets import channel_set_names, load_channel_set
from pipeline.montage.mapping import MontagePlan, plan_montage
from pipeline.montage.names import ResolvedName, normalize_name, resolve_name
from pipeline.montage.positions import ElectrodePositions, load_electrode_positions
from pipeline.montage.vocabulary import Vocabulary, build_vocabulary_rows, load_vocabulary, resources_dir

__all__ = [
    "ElectrodePositions",
    "MontagePlan",
    "ResolvedName",
    "Vocabulary",
    "build_vocabulary_rows",
    "channel_set_names",
    "load_channel_set",
    "load_electrode_positions",
    "load_vocabulary",
    "normalize_name",
    "plan_montage",
    "resolve_name",
    "resources_dir",
]
