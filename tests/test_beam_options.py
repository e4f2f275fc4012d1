"""The build's pipeline options hand out one view per options class, and behave as Beam's own:
same values, a value set through one view seen through the others, picklable."""

from __future__ import annotations

import pickle

from apache_beam.options.pipeline_options import (DirectOptions, PipelineOptions, SetupOptions, StandardOptions,
                                                  TypeOptions)

from uvd_pipeline.beam_options import ViewCachingOptions

FLAGS = ["--direct_num_workers=2", "--direct_running_mode=multi_threading", "--runner=DirectRunner",
         "--experiments=a", "--experiments=b"]


def test_views_are_made_once_and_hold_beams_values():
    options = ViewCachingOptions(FLAGS)
    reference = PipelineOptions(FLAGS)
    assert options.view_as(DirectOptions) is options.view_as(DirectOptions)
    for cls in (DirectOptions, StandardOptions, TypeOptions, SetupOptions):
        assert options.view_as(cls).get_all_options() == reference.view_as(cls).get_all_options()
    assert options.get_all_options() == reference.get_all_options()


def test_a_value_set_through_a_view_is_seen_everywhere():
    options = ViewCachingOptions(FLAGS)
    options.view_as(SetupOptions).save_main_session = True
    assert options.view_as(SetupOptions).save_main_session is True
    assert options.get_all_options()["save_main_session"] is True
    assert options.view_as(StandardOptions).view_as(SetupOptions).save_main_session is True


def test_pickled_options_keep_values_not_views():
    options = ViewCachingOptions(FLAGS)
    options.view_as(DirectOptions).direct_num_workers = 3
    restored = pickle.loads(pickle.dumps(options))
    assert "_views" not in pickle.loads(pickle.dumps(options)).__dict__
    assert restored.view_as(DirectOptions).direct_num_workers == 3
    assert restored.view_as(DirectOptions) is restored.view_as(DirectOptions)
