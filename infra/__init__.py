"""Stepwise infrastructure (AWS CDK). Entry point: `python -m infra.app`."""

import os

# jsii prints a large end-of-life banner on node 20 (the system node here); it is only noise.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
