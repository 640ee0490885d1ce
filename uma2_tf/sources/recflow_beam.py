"""`recflow_beam`: the `recflow` dataset prepared by an Apache Beam pipeline (the `[beam]` extra).

    python -m pipelines.prepare --dataset=recflow/default --manual_dir=/data/RecFlow \
        --beam_pipeline_options=runner=DirectRunner,direct_num_workers=8

`RecflowBeam` is `recflow.Recflow` with another `_split_generators`: `pipelines.prepare` builds it
when given --beam_pipeline_options. It is not registered with TFDS (the registered `recflow` builder
reads what it writes), and apache_beam is imported only when it runs, so this module imports
without the extra.
"""
from __future__ import annotations

from typing import Sequence

from uma2_tf.sources import recflow
from uma2_tf.sources import recflow_files


class RecflowBeam(recflow.Recflow, skip_registration=True):
  """`recflow` prepared by an Apache Beam pipeline: the same dataset, on as many workers as the
  runner has.

      pip install -e '.[beam]'
      OPTIONS=runner=DirectRunner,direct_num_workers=8,direct_running_mode=multi_processing
      python -m pipelines.prepare --dataset=recflow/default --manual_dir=/data/RecFlow \
          --beam_pipeline_options=$OPTIONS

  Each day is read by one worker (`recflow_files.read_day`: one day's files, vectorised); ids,
  histories, popularity and the side files are `logs_beam.write`'s. It writes the same directory
  (`<data_dir>/recflow/<config>/<version>`) with the same records and side files as `Recflow`,
  which reads it back (`registry.load("recflow/<config>", data_dir)`). The README's "Preparing
  RecFlow with Apache Beam" names the Dataflow, Flink and Spark options.
  """

  name = "recflow"

  def _split_generators(self, dl_manager, pipeline):
    import apache_beam as beam

    from uma2_tf.sources import logs_beam

    config = self.builder_config
    manual_dir = recflow.checked_manual_dir(dl_manager)
    dates = sorted({*config.train_dates, *config.test_dates})
    # Before any worker starts: a missing day is a usage error.
    recflow_files.check_days(manual_dir, dates)
    name = f"recflow/{config.name}"
    directory = str(self.data_dir)
    days = (pipeline
            | "Days" >> beam.Create(dates)
            | "ReadDay" >> beam.FlatMap(_day_elements, manual_dir=manual_dir, label=config.label,
                                        user_features=config.user_features,
                                        stage_source=config.stage_source).with_outputs(
                                            "items", "info", main="requests"))
    generators = logs_beam.write(pipeline, directory, days.requests, days.items,
                                 splits=config.splits, source=name,
                                 user_features=config.user_features,
                                 item_features=recflow_files.ITEM_FEATURES,
                                 stages=recflow_files.STAGES, has_recall_log=True)
    _ = (days.info
         | "ListDays" >> beam.combiners.ToList()
         | "WriteSourceFile" >> beam.Map(recflow.write_source_file, directory=directory,
                                         manual_dir=manual_dir, name=name, label=config.label,
                                         splits=config.splits))
    return generators


def _day_elements(date: str, *, manual_dir: str, label: str, user_features: Sequence[str],
                  stage_source: str):
  """A date -> its requests (canonical dicts), its videos table (tagged "items") and its counts
  ("info")."""
  from apache_beam import pvalue

  requests, items, info = recflow_files.read_day(manual_dir, date, label=label,
                                                 user_features=user_features,
                                                 stage_source=stage_source)
  yield pvalue.TaggedOutput("info", info)
  # Earlier days' rows win, as in read_tables.
  yield pvalue.TaggedOutput("items", (date, {c: items[c].to_numpy() for c in items.columns}))
  yield from requests.to_dict("records")
