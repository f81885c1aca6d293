"""Write oumi_fields.json: every field of Oumi's config classes with its default, read from Oumi's
source at one commit (the reference for the format snaketune accepts).

    python tests/assets/make_oumi_fields.py /path/to/oumi-checkout > tests/assets/oumi_fields.json

Reads src/oumi/core/configs/params/{tuning,model,data,training,peft,fsdp}_params.py with `ast`
(nothing of Oumi is imported). A default that is not a literal (a factory, an enum member) is
written as its literal value where one is plain (`field(default_factory=list)` -> [],
`TrainerType.HF` -> "HF"), else null.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

FILES = ("tuning", "model", "data", "training", "peft", "fsdp")
CLASSES = ("TuningParams", "ModelParams", "DataParams", "DatasetSplitParams", "DatasetParams",
           "TrainingParams", "PeftParams", "FSDPParams")


def default_of(node):
    if node is None:
        return None
    if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "field":
        for keyword in node.keywords:
            if keyword.arg == "default":
                return default_of(keyword.value)
            if keyword.arg == "default_factory":
                name = getattr(keyword.value, "id", "")
                return {"list": [], "dict": {}, "int": 0, "bool": False, "str": ""}.get(name)
        return None
    if isinstance(node, ast.Attribute):  # an enum member: its name
        return node.attr
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def main(checkout: Path) -> dict:
    commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    classes = {}
    for name in FILES:
        tree = ast.parse((checkout / "src/oumi/core/configs/params" / f"{name}_params.py").read_text())
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name in CLASSES:
                classes[node.name] = {item.target.id: default_of(item.value) for item in node.body
                                      if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)}
    return {"repository": "oumi-ai/oumi", "commit": commit, "classes": classes}


if __name__ == "__main__":
    json.dump(main(Path(sys.argv[1])), sys.stdout, indent=1, sort_keys=False, default=str)
    sys.stdout.write("\n")
