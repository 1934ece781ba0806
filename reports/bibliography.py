"""The papers of the strategies, as BibTeX, and the names tables print for them.

Each strategy class declares its `display_name` and the `cite_keys` of its papers
(strategies.base.Strategy.paper_name); `headbench run` writes the name and the BibTeX
entries into every run record (`display_name`, `references`), so a report needs only the
records, and a strategy registered from another package brings its own entries (its
class's `bibtex`). Records written before they carried them (headbench 0.1, schema 1 and
2) get theirs from LEGACY_NAMES below, frozen: the strategies that existed then.

Entries give what the papers' publishers list (authors, title, venue, year; volume,
number and pages for journals). Where a record's entry and this file disagree on a key,
this file wins, so a correction here reaches old records too.
"""

from __future__ import annotations

import re
from typing import Any

ENTRIES: dict[str, str] = {
    "kirkpatrick2017overcoming": """@article{kirkpatrick2017overcoming,
  author = {Kirkpatrick, James and Pascanu, Razvan and Rabinowitz, Neil and Veness, Joel
    and Desjardins, Guillaume and Rusu, Andrei A. and Milan, Kieran and Quan, John
    and Ramalho, Tiago and Grabska-Barwinska, Agnieszka and Hassabis, Demis
    and Clopath, Claudia and Kumaran, Dharshan and Hadsell, Raia},
  title = {Overcoming catastrophic forgetting in neural networks},
  journal = {Proceedings of the National Academy of Sciences},
  volume = {114},
  number = {13},
  pages = {3521--3526},
  year = {2017},
  doi = {10.1073/pnas.1611835114}
}""",
    "schwarz2018progress": """@inproceedings{schwarz2018progress,
  author = {Schwarz, Jonathan and Czarnecki, Wojciech and Luketina, Jelena
    and Grabska-Barwinska, Agnieszka and Teh, Yee Whye and Pascanu, Razvan
    and Hadsell, Raia},
  title = {Progress \\& Compress: A scalable framework for continual learning},
  booktitle = {Proceedings of the 35th International Conference on Machine Learning (ICML)},
  series = {Proceedings of Machine Learning Research},
  volume = {80},
  pages = {4528--4537},
  year = {2018}
}""",
    "li2018learning": """@article{li2018learning,
  author = {Li, Zhizhong and Hoiem, Derek},
  title = {Learning without Forgetting},
  journal = {IEEE Transactions on Pattern Analysis and Machine Intelligence},
  volume = {40},
  number = {12},
  pages = {2935--2947},
  year = {2018},
  doi = {10.1109/TPAMI.2017.2773081}
}""",
    "zhao2020maintaining": """@inproceedings{zhao2020maintaining,
  author = {Zhao, Bowen and Xiao, Xi and Gan, Guojun and Zhang, Bin and Xia, Shu-Tao},
  title = {Maintaining Discrimination and Fairness in Class Incremental Learning},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern
    Recognition (CVPR)},
  year = {2020}
}""",
    "wu2019large": """@inproceedings{wu2019large,
  author = {Wu, Yue and Chen, Yinpeng and Wang, Lijuan and Ye, Yuancheng and Liu, Zicheng
    and Guo, Yandong and Fu, Yun},
  title = {Large Scale Incremental Learning},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern
    Recognition (CVPR)},
  year = {2019}
}""",
    "rebuffi2017icarl": """@inproceedings{rebuffi2017icarl,
  author = {Rebuffi, Sylvestre-Alvise and Kolesnikov, Alexander and Sperl, Georg
    and Lampert, Christoph H.},
  title = {{iCaRL}: Incremental Classifier and Representation Learning},
  booktitle = {Proceedings of the IEEE Conference on Computer Vision and Pattern
    Recognition (CVPR)},
  year = {2017}
}""",
    "mensink2013distance": """@article{mensink2013distance,
  author = {Mensink, Thomas and Verbeek, Jakob and Perronnin, Florent and Csurka, Gabriela},
  title = {Distance-Based Image Classification: Generalizing to New Classes at Near-Zero
    Cost},
  journal = {IEEE Transactions on Pattern Analysis and Machine Intelligence},
  volume = {35},
  number = {11},
  pages = {2624--2637},
  year = {2013},
  doi = {10.1109/TPAMI.2013.83}
}""",
    "zhou2024revisiting": """@article{zhou2024revisiting,
  author = {Zhou, Da-Wei and Cai, Zi-Wen and Ye, Han-Jia and Zhan, De-Chuan and Liu, Ziwei},
  title = {Revisiting Class-Incremental Learning with Pre-Trained Models: Generalizability
    and Adaptivity are All You Need},
  journal = {International Journal of Computer Vision},
  year = {2024}
}""",
    "hayes2020lifelong": """@inproceedings{hayes2020lifelong,
  author = {Hayes, Tyler L. and Kanan, Christopher},
  title = {Lifelong Machine Learning with Deep Streaming Linear Discriminant Analysis},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern
    Recognition (CVPR) Workshops},
  year = {2020}
}""",
    "mcdonnell2023ranpac": """@inproceedings{mcdonnell2023ranpac,
  author = {McDonnell, Mark D. and Gong, Dong and Parvaneh, Amin and Abbasnejad, Ehsan
    and van den Hengel, Anton},
  title = {{RanPAC}: Random Projections and Pre-trained Models for Continual Learning},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  volume = {36},
  year = {2023}
}""",
    "zhuang2022acil": """@inproceedings{zhuang2022acil,
  author = {Zhuang, Huiping and Weng, Zhenyu and Wei, Hongxin and Xie, Renchunzi
    and Toh, Kar-Ann and Lin, Zhiping},
  title = {{ACIL}: Analytic Class-Incremental Learning with Absolute Memorization and
    Privacy Protection},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  volume = {35},
  year = {2022}
}""",
    "zheng2024learn": """@inproceedings{zheng2024learn,
  author = {Zheng, Junhao and Qiu, Shengjie and Ma, Qianli},
  title = {Learn or Recall? Revisiting Incremental Learning with Pre-trained Language
    Models},
  booktitle = {Proceedings of the 62nd Annual Meeting of the Association for Computational
    Linguistics (Volume 1: Long Papers)},
  year = {2024}
}""",
    "goswami2023fecam": """@inproceedings{goswami2023fecam,
  author = {Goswami, Dipam and Liu, Yuyang and Twardowski, Bart{\\l}omiej
    and van de Weijer, Joost},
  title = {{FeCAM}: Exploiting the Heterogeneity of Class Distributions in Exemplar-Free
    Continual Learning},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year = {2023}
}""",
    "petit2023fetril": """@inproceedings{petit2023fetril,
  author = {Petit, Gr{\\'e}goire and Popescu, Adrian and Schindler, Hugo and Picard, David
    and Delezoide, Bertrand},
  title = {{FeTrIL}: Feature Translation for Exemplar-Free Class-Incremental Learning},
  booktitle = {Proceedings of the IEEE/CVF Winter Conference on Applications of Computer
    Vision (WACV)},
  year = {2023}
}""",
    "prabhu2020gdumb": """@inproceedings{prabhu2020gdumb,
  author = {Prabhu, Ameya and Torr, Philip H. S. and Dokania, Puneet K.},
  title = {{GDumb}: A Simple Approach that Questions Our Progress in Continual Learning},
  booktitle = {Computer Vision -- ECCV 2020},
  year = {2020}
}""",
    "aljundi2018memory": """@inproceedings{aljundi2018memory,
  author = {Aljundi, Rahaf and Babiloni, Francesca and Elhoseiny, Mohamed
    and Rohrbach, Marcus and Tuytelaars, Tinne},
  title = {Memory Aware Synapses: Learning what (not) to forget},
  booktitle = {Computer Vision -- ECCV 2018},
  year = {2018}
}""",
    "zenke2017continual": """@inproceedings{zenke2017continual,
  author = {Zenke, Friedemann and Poole, Ben and Ganguli, Surya},
  title = {Continual Learning Through Synaptic Intelligence},
  booktitle = {Proceedings of the 34th International Conference on Machine Learning (ICML)},
  series = {Proceedings of Machine Learning Research},
  volume = {70},
  pages = {3987--3995},
  year = {2017}
}""",
}
"""Citation key -> BibTeX entry, for the papers of headbench's own strategies."""

LEGACY_NAMES: dict[str, tuple[str, tuple[str, ...]]] = {
    "naive": ("Fine-tuning", ()),
    "weight_aligning": ("WA", ("zhao2020maintaining",)),
    "ewc": ("EWC", ("kirkpatrick2017overcoming",)),
    "lwf": ("LwF", ("li2018learning",)),
    "joint": ("Joint", ()),
    "ncm": ("NCM", ("mensink2013distance", "rebuffi2017icarl", "zhou2024revisiting")),
    "slda": ("SLDA", ("hayes2020lifelong",)),
    "ridge": ("RanPAC", ("mcdonnell2023ranpac",)),
    "replay": ("Replay", ("rebuffi2017icarl",)),
    "bic": ("BiC", ("wu2019large",)),
    "seq_star": ("SEQ*", ("zheng2024learn",)),
}
"""Registry key -> (display name, citation keys) for records that do not carry them."""
LEGACY_VARIANTS: dict[tuple[str, str, str], tuple[str, tuple[str, ...]]] = {
    ("ridge", "method", "acil"): ("ACIL", ("zhuang2022acil",)),
    ("ewc", "mode", "online"): ("Online EWC", ("kirkpatrick2017overcoming", "schwarz2018progress")),
}
"""(key, hyperparameter, value) -> (display name, citation keys) where the method a
strategy runs depends on a hyperparameter."""

_ENTRY = re.compile(r"@([A-Za-z]+)\s*\{\s*([A-Za-z0-9_:.+/-]+)\s*,")
"""An entry's start: its type and a key of the characters BibTeX keys use (so a key goes
into `\\cite{...}` as it is)."""


def entry_key(entry: str) -> str | None:
    """The citation key of one BibTeX entry, or None if `entry` is not exactly one entry
    (`@type{key, ...}` with balanced braces and nothing after the closing one)."""
    match = _ENTRY.match(entry.strip())
    if match is None:
        return None
    depth = 0
    text = entry.strip()
    for index, char in enumerate(text):
        if char == "{" and (index == 0 or text[index - 1] != "\\"):
            depth += 1
        elif char == "}" and text[index - 1] != "\\":
            depth -= 1
            if depth == 0:
                return match[2] if index == len(text) - 1 else None
        if depth < 0:
            return None
    return None


def legacy_name(strategy: str, hyperparameters: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    """(display name, citation keys) for a record without them: the registry key itself
    and no paper for a strategy headbench did not ship."""
    for (key, name, value), found in LEGACY_VARIANTS.items():
        if key == strategy and hyperparameters.get(name) == value:
            return found
    return LEGACY_NAMES.get(strategy, (strategy, ()))


def resolve(keys: tuple[str, ...], own: tuple[str, ...] = ()) -> list[str]:
    """The BibTeX entries of `keys`: from ENTRIES, else from `own` (a strategy's own
    entries); KeyError naming a key found in neither."""
    mine = {entry_key(entry): entry.strip() for entry in own}
    entries = []
    for key in keys:
        entry = ENTRIES.get(key, mine.get(key))
        if entry is None:
            raise KeyError(f"citation key {key!r}: no BibTeX entry (give it in `bibtex`)")
        entries.append(entry)
    return entries
