/* kbindex_data.S - embeds analyzer/cli/kbindex.py (the environment indexer `safepickle kb
 * index` runs with the target interpreter) as NUL-terminated read-only text. */
    .section .rodata
    .globl cli_kbindex_py
    .hidden cli_kbindex_py
    .type cli_kbindex_py, @object
cli_kbindex_py:
    .incbin "analyzer/cli/kbindex.py"
    .byte 0
    .globl cli_kbindex_py_end
    .hidden cli_kbindex_py_end
cli_kbindex_py_end:
    .section .note.GNU-stack,"",@progbits
