"""`make bench`: measurements for README "Performance" (a script, not tests). See bench/run.py."""
