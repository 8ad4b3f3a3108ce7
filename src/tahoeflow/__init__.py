"""tahoeflow: the library behind the Tahoe-100M Snakemake workflow.

Pure, typed functions (arrays in, arrays out) grouped by stage, in the spirit of
scanpy's ``pp``/``tl`` split. The Snakemake scripts in ``workflow/scripts`` are thin
entry points around these functions; every function here is unit-tested without
Snakemake.
"""

__version__ = "0.1.0"
