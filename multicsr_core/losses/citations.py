"""BibTeX of the papers the losses come from: read by each loss's ``citation`` and by the model card."""

from __future__ import annotations

MULTICSR = """
@inproceedings{wang2024multicsr,
    title = "Large Language Models can Contrastively Refine their Generation for Better Sentence Representation Learning",
    author = "Wang, Huiming and Li, Zhaodonghui and Cheng, Liying and Soh, De Wen and Bing, Lidong",
    booktitle = "Proceedings of NAACL 2024",
    year = "2024",
    url = "https://arxiv.org/abs/2310.10962",
}
"""
SIMCSE = """
@inproceedings{gao2021simcse,
    title = "{S}im{CSE}: Simple Contrastive Learning of Sentence Embeddings",
    author = "Gao, Tianyu and Yao, Xingcheng and Chen, Danqi",
    booktitle = "Proceedings of EMNLP 2021",
    year = "2021",
    url = "https://arxiv.org/abs/2104.08821",
}
"""
CLAIF = """
@inproceedings{cheng2023claif,
    title = "Improving Contrastive Learning of Sentence Embeddings from {AI} Feedback",
    author = "Cheng, Qinyuan and Yang, Xiaogui and Sun, Tianxiang and Li, Linyang and Qiu, Xipeng",
    booktitle = "Findings of ACL 2023",
    year = "2023",
    url = "https://arxiv.org/abs/2305.01918",
}
"""
#: By the name a model card gives each paper.
BY_NAME = {"MultiCSR": MULTICSR, "SimCSE": SIMCSE, "CLAIF": CLAIF}
