/* What the cbnet command's files (main.c, repl.c) share: a Lua state with
 * cbnet's module paths, protected calls with tracebacks and Ctrl-C
 * handling, and error reports. */
#ifndef CB_COMMAND_H
#define CB_COMMAND_H

#include <lua.h>

/* A state with the standard libraries, cbnet's paths and the C module. */
lua_State *cbc_new_state(void);
/* lua_pcall of the function below narg arguments, with a traceback handler;
 * Ctrl-C during the call raises "interrupted". */
int cbc_protected_call(lua_State *L, int narg, int nres);
/* Prints the error on top of the stack (if status is not LUA_OK), pops it. */
void cbc_report(lua_State *L, int status);
/* Whether the last protected call was stopped by Ctrl-C. */
int cbc_interrupted(void);

/* The interactive prompt on L: line editing, history in ~/.cbnet_history,
 * completion of names and methods, `=expr` and bare expressions print
 * their values. Returns when input ends. */
void cbc_repl(lua_State *L);

#endif
