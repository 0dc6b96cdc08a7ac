"""The report of a grid (`helm tables`, helm/report/cli.py): gather (run directories and evaluation JSONs -> the
long table), tables, figures and the artifact folder, each its own module; the statistics live in helm/stats.py."""
