/* kb_data.S - embeds the knowledge base files (analyzer/kb/ TSV files) into the build as
 * NUL-terminated read-only text; analyzer/kb.c reads them. Assembled from the repo
 * root (the Makefile passes -Wa,-I.). */
    .section .rodata
    .balign 16
    .globl spa_kb_blob_stdlib
    .hidden spa_kb_blob_stdlib
    .type spa_kb_blob_stdlib, @object
spa_kb_blob_stdlib:
    .incbin "analyzer/kb/stdlib.tsv"
    .byte 0
    .globl spa_kb_blob_stdlib_end
    .hidden spa_kb_blob_stdlib_end
spa_kb_blob_stdlib_end:
    .balign 16
    .globl spa_kb_blob_ml
    .hidden spa_kb_blob_ml
    .type spa_kb_blob_ml, @object
spa_kb_blob_ml:
    .incbin "analyzer/kb/ml.tsv"
    .byte 0
    .globl spa_kb_blob_ml_end
    .hidden spa_kb_blob_ml_end
spa_kb_blob_ml_end:
    .section .note.GNU-stack,"",@progbits
