/* main.c - entry point of the safepickle CLI: dispatches to the subcommands
 * listed in commands.def and prints the overall help. */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

typedef struct { const char *name; int (*fn)(int, char **); const char *help; } cli_cmd;

static const cli_cmd cli_cmds[] = {
#define X(name, fn, help) { name, fn, help },
#include "commands.def"
#undef X
};

static void cli_usage(FILE *f) {
    fprintf(f, "usage: safepickle COMMAND [ARGS...]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof cli_cmds / sizeof cli_cmds[0]; i++)
        fprintf(f, "  %-10s %s\n", cli_cmds[i].name, cli_cmds[i].help);
    fprintf(f, "\n'safepickle COMMAND --help' describes one command.\n");
}

int cmd_version(int argc, char **argv) {
    (void)argc; (void)argv;
    printf("safepickle %s\n", SPA_VERSION);
    return CLI_EXIT_OK;
}

const char *cli_self_dir(void) {
    static char dir[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", dir, sizeof dir - 1);
    if (n <= 0) return ".";
    dir[n] = '\0';
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    return dir;
}

int main(int argc, char **argv) {
    if (argc < 2) { cli_usage(stderr); return CLI_EXIT_ERROR; }
    const char *c = argv[1];
    if (!strcmp(c, "--help") || !strcmp(c, "-h") || !strcmp(c, "help")) { cli_usage(stdout); return CLI_EXIT_OK; }
    if (!strcmp(c, "--version")) return cmd_version(argc - 1, argv + 1);
    for (size_t i = 0; i < sizeof cli_cmds / sizeof cli_cmds[0]; i++)
        if (!strcmp(c, cli_cmds[i].name)) return cli_cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "safepickle: unknown command '%s'\n", c);
    cli_usage(stderr);
    return CLI_EXIT_ERROR;
}
