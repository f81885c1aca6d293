from rule_setup import start

tune = start(snakemake)  # noqa: F821 (injected by Snakemake)
from snaketune.data import prepare_data  # noqa: E402
from snaketune.model import load_tokenizer, read_source  # noqa: E402

source = read_source(snakemake.input.model)  # noqa: F821
tokenizer = load_tokenizer(source, tune.model)
prepare_data(tune.data, tokenizer, tune.max_length, snakemake.output[0])  # noqa: F821
