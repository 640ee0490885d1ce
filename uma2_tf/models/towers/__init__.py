"""The towers' registry: every two-tower family by the name `--tower` and `TrainConfig.tower` use.

    tower = towers.build_tower("youtube_dnn", schema, catalog)
    tower = towers.build_tower("esam_dat", schema, catalog)     # ESAM around an already built DAT

One module per family (`youtube_dnn`, `dat`, `fm`, `mind`, `comirec`, `esam`), each a `base.Tower`;
this module imports them and none of them imports it. `comirec` holds two towers, "comirec_sa"
(self-attentive) and "comirec_dr" (dynamic routing). ESAM is not a tower of its own but a wrapper:
its entries build the base tower first, then compose ESAM around it.
"""
from __future__ import annotations

from uma2_tf.models.towers import comirec, esam, fm, mind
from uma2_tf.models.towers.base import MultiInterestTower, Tower, as_float32, mlp  # noqa: F401
from uma2_tf.models.towers.dat import DAT
from uma2_tf.models.towers.youtube_dnn import YoutubeDNN


def _esam(base: str):
  """ESAM around the `base` tower; ESAM's own arguments (`esam.ESAM_ARGS`) are taken out of kwargs,
  the rest build the base."""
  def build(schema, catalog, **kwargs):
    own = {k: kwargs.pop(k) for k in esam.ESAM_ARGS if k in kwargs}
    return esam.ESAM(build_tower(base, schema, catalog, **kwargs), name=f"esam_{base}", **own)
  return build


TOWERS = {"youtube_dnn": YoutubeDNN, "dat": DAT, "fm": fm.FM, "mind": mind.MIND,
          "comirec_sa": comirec.ComiRecSA, "comirec_dr": comirec.ComiRecDR,
          "esam_youtube_dnn": _esam("youtube_dnn"), "esam_dat": _esam("dat")}

# Towers with K interests per user (`num_interests`, a routing matrix for REMI's regulariser).
MULTI_INTEREST = ("mind", "comirec_sa", "comirec_dr")


def build_tower(name: str, schema, catalog, **kwargs) -> Tower:
  if name not in TOWERS:
    raise ValueError(f"unknown tower {name!r}; known towers: {sorted(TOWERS)}")
  return TOWERS[name](schema, catalog, **kwargs)
