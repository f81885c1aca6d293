import rule_setup  # noqa: E402,F401 (first: in a source checkout it puts the package on sys.path)

rule_setup.send_output_to_log(snakemake)  # noqa: F821 (injected by Snakemake)
tune, moved = rule_setup.job_config(snakemake)  # noqa: F821
from snaketune.model import prepare_model  # noqa: E402

# The rule's output (or the folder it declares). Where a storage plugin moves the files, the jobs
# that load the model run where a local model folder is not: it is copied into the prepared one.
prepare_model(tune.model, tune.tuning.layout.model_source, copy_local=moved)
