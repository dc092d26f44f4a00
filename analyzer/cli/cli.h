/* cli.h - shared declarations for the safepickle command-line tool (prefix cli_/cmd_). */
#ifndef SP_CLI_H
#define SP_CLI_H
#include "spa.h"

/* Exit codes: 0 nothing would be blocked, 1 something would be blocked, 2 usage or I/O error. */
enum { CLI_EXIT_OK = 0, CLI_EXIT_BLOCK = 1, CLI_EXIT_ERROR = 2 };

#define X(name, fn, help) int fn(int argc, char **argv);
#include "commands.def"
#undef X

/* Path of the running executable's directory (for finding libsafepickle.so next to it). */
const char *cli_self_dir(void);
#endif
