"""The fetchfleet client node: ``python -m client metadata N`` / ``python -m client download SITE N``."""
