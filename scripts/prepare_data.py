from rule_setup import start

tune = start(snakemake)  # noqa: F821 (injected by Snakemake)
from snaketune.data import prepare_data  # noqa: E402
from snaketune.model import load_tokenizer, read_source  # noqa: E402

layout = tune.tuning.layout  # where this job's files are (rule_setup.job_config)
source = read_source(layout.model_source)
tokenizer = load_tokenizer(source, tune.model)
prepare_data(tune.data, tokenizer, tune.max_length, layout.data_summary)
