"""The knowledge base (知识库, 一问一答): entries imported from JSONL/CSV in versions, searched in
Chinese by word (jieba + SQLite FTS5, bm25, synonyms); an expired entry is never suggested.
See docs/triage.md, "Knowledge base"."""

from gateway.knowledge.base import Hit, ImportResult, KnowledgeBase, Version
from gateway.knowledge.entries import BadImport, Entry, parse_entries

__all__ = ["BadImport", "Entry", "Hit", "ImportResult", "KnowledgeBase", "Version", "parse_entries"]
