# opcodes_stack.awk - derives each opcode's stack effect as numbers from the
# pickletools stack names in opcodes.def (the only place they are written):
#   #define SPA_OPSTK_<NAME> pop, below, push, flags
# pop: values taken from the top (with SPA_STK_MARK: from above the topmost
# MARK, which is taken too); below: values under that MARK it also takes;
# push: values it leaves; flags: SPA_STK_MARK (pops through the topmost MARK),
# SPA_STK_PUSHMARK (pushes a MARK), SPA_STK_STR (what it pushes may be a
# str: "any", "str" or "bytes_or_str"). Build: awk -f opcodes_stack.awk opcodes.def
BEGIN { print "/* generated from analyzer/opcodes.def by analyzer/opcodes_stack.awk: do not edit */" }
/^OP\(/ {
    name = $0; sub(/^OP\( */, "", name); sub(/ *,.*/, "", name)
    nq = split($0, q, "\"")
    if (nq < 7) { print "opcodes_stack.awk: bad line: " $0 > "/dev/stderr"; exit 1 }
    before = q[4]; after = q[6]
    nb = split(before, b, " "); na = split(after, a, " ")
    pop = 0; below = 0; mark = 0
    for (i = 1; i <= nb; i++) {
        if (b[i] == "mark") { mark = 1; below = pop; pop = 0 }
        else if (b[i] != "stackslice") pop++
    }
    flags = ""
    push = na
    if (na == 1 && a[1] == "mark") { push = 0; flags = flags "|SPA_STK_PUSHMARK" }
    if (mark) flags = flags "|SPA_STK_MARK"
    if (na > 0 && (a[na] == "any" || a[na] == "str" || a[na] == "bytes_or_str")) flags = flags "|SPA_STK_STR"
    if (flags == "") flags = "0"; else flags = substr(flags, 2)
    printf "#define SPA_OPSTK_%s %d, %d, %d, %s\n", name, pop, below, push, flags
}
