# kb_lines.awk - splits the knowledge-base TSV files (analyzer/kb/) into the
# line table analyzer/kb.c walks ($(BUILD)/gen/kb_lines.inc), so that a
# lookup never re-splits text: one KBL(nfields, from_stdlib, f0, f1, f2) per
# line that is neither empty nor a comment (and a KBD(...) of the same fields
# after each directive line), fields split on TABs the way
# kb.c's text cursor did (a trailing TAB opens no field; at most 3 fields).
# Usage: awk -f kb_lines.awk analyzer/kb/stdlib.tsv analyzer/kb/ml.tsv
function cstr(s) { gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s); return "\"" s "\"" }
FNR == 1 { file++ }
/^#/ || $0 == "" { next }
{
    n = split($0, f, "\t")
    if (substr($0, length($0), 1) == "\t") n--
    if (n > 3) n = 3
    for (i = n + 1; i <= 3; i++) f[i] = ""
    printf "KBL(%d, %s, %s, %s, %s)\n", n, file == 1 ? "true" : "false", cstr(f[1]), cstr(f[2]), cstr(f[3])
    # directive lines (@alias, @nested, @verb, ...) once more, in their own table:
    # lookups that only read directives walk those ~90 lines, not every line
    if (substr(f[1], 1, 1) == "@")
        printf "KBD(%d, %s, %s, %s, %s)\n", n, file == 1 ? "true" : "false", cstr(f[1]), cstr(f[2]), cstr(f[3])
}
