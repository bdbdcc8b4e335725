"""The end-of-run summary (experiments.reporting.format_summary): numbers as percentages of the
results, only existing files listed."""

import os

from experiments import reporting


def _results():
  return {
      "method": "dro_augmix", "dataset": "digits", "preset": "quick",
      "clean_accuracy": 0.93871, "mean_corruption_accuracy": 0.8125,
      "corruption_accuracy": {"gaussian_noise": {"1": 0.9, "3": 0.8, "5": 0.7},
                              "snow": {"1": 0.9, "3": 0.8, "5": 0.75}},
      "adversarial_accuracy": {f"{8 / 255:.6g}": 0.091, f"{2 / 255:.6g}": 0.60449},
      "adversarial": {"attack": "pgd", "num_steps": 5},
      "train_seconds": 70.6, "steps": 220,
  }


def test_summary_numbers_and_paths(tmp_path):
  wd = str(tmp_path)
  for name in ("results.md", "adversarial.png"):
    open(os.path.join(wd, name), "w").close()
  text = reporting.format_summary(_results(), wd)
  lines = text.splitlines()
  # 0.93871 -> 93.9%, 0.8125 -> 81.2% (round half to even of 81.25), eps sorted ascending.
  assert lines[0] == ("== dro_augmix on digits (quick): clean 93.9% | mean corruption 81.2% "
                      "(2 standard corruptions x severities 1,3,5) | PGD-5 eps 2/255 60.4%, 8/255 9.1% "
                      "| training 71 s, 220 steps")
  assert lines[1] == f"   tables: {os.path.join(wd, 'results.md')}"
  # accuracy_vs_severity.png was not written: only the existing plot is listed.
  assert lines[2] == f"   plots:  {os.path.join(wd, 'adversarial.png')}"
  assert len(lines) == 3


def test_summary_missing_parts_and_groups(tmp_path):
  res = {"method": "erm", "dataset": "waterbirds", "clean_accuracy": None,
         "group_accuracy": {"worst_group": 0.5, "average": 0.875},
         "adversarial_accuracy": {"0.01": 0.25}}
  text = reporting.format_summary(res, str(tmp_path))
  assert text == ("== erm on waterbirds: clean n/a | PGD eps 0.01 25.0% "
                  "| worst group 50.0%, average 87.5%")


def test_the_mean_names_what_it_averages():
  # The extras (speckle_noise, ...) are reported beside the mean, not in it.
  acc = {"fog": {"1": 0.5, "5": 0.4}, "speckle_noise": {"1": 0.5, "2": 0.5, "5": 0.1}}
  assert reporting.corruption_mean_scope(acc) == "1 standard corruption x severities 1,5"
  acc = {"fog": {"3": 0.5}, "snow": {"3": 0.5}, "frost": {"3": 0.5}}
  assert reporting.corruption_mean_scope(acc) == "3 standard corruptions x severity 3"
