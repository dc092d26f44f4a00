/* policy_default.S - embeds policies/default.json into the build (NUL-terminated);
 * spa_policy_default() parses it when nothing else is configured. */
    .section .rodata
    .balign 16
    .globl spa_policy_default_blob
    .hidden spa_policy_default_blob
    .type spa_policy_default_blob, @object
spa_policy_default_blob:
    .incbin "policies/default.json"
    .byte 0
    .globl spa_policy_default_blob_end
    .hidden spa_policy_default_blob_end
spa_policy_default_blob_end:
    .section .note.GNU-stack,"",@progbits
