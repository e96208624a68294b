"""What users run on an ensemble: scoring, HumanEval and GSM8K, attribution, plotting, and the
``chared`` command line."""
