/* The interactive prompt: GNU readline for line editing and history (as
 * lua5.4's own prompt), completion of global names, table fields
 * (cbnet.ze<Tab>) and methods (t:su<Tab>), `=expr` as in Lua 5.1-5.3, and
 * the value of an expression printed, as lua.c does. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <readline/history.h>
#include <readline/readline.h>

#include <lauxlib.h>
#include <lua.h>

#include "command.h"

#define HISTORY_LINES 1000

static lua_State *completion_state; /* readline's callbacks take no context */

/* ---- reading lines ---- */

/* A line from readline (a terminal) or stdin; NULL at the end. The caller
 * frees it. */
static char *read_line(const char *prompt) {
  if (isatty(STDIN_FILENO)) {
    char *line = readline(prompt);
    if (line && *line) add_history(line);
    return line;
  }
  char buf[8192];
  fputs(prompt, stdout);
  fflush(stdout);
  if (!fgets(buf, sizeof buf, stdin)) return NULL;
  buf[strcspn(buf, "\n")] = '\0';
  return strdup(buf);
}

static int is_incomplete(lua_State *L, int status) {
  if (status != LUA_ERRSYNTAX) return 0;
  size_t len;
  const char *msg = lua_tolstring(L, -1, &len);
  const size_t eof_len = strlen("<eof>");
  if (len >= eof_len && strcmp(msg + len - eof_len, "<eof>") == 0) {
    lua_pop(L, 1);
    return 1;
  }
  return 0;
}

/* Compiles `return LINE` (so an expression's value is printed; `=expr` is
 * the same), else the statement, reading more lines while it is
 * incomplete. Leaves the chunk or an error message on the stack. */
static int compile(lua_State *L, const char *line) {
  if (line[0] == '=') line++;
  lua_pushfstring(L, "return %s", line);
  int status = luaL_loadbuffer(L, lua_tostring(L, -1), lua_rawlen(L, -1), "=stdin");
  lua_remove(L, -2);
  if (status == LUA_OK) return status;
  lua_pop(L, 1);
  lua_pushstring(L, line);
  for (;;) {
    status = luaL_loadbuffer(L, lua_tostring(L, -1), lua_rawlen(L, -1), "=stdin");
    if (!is_incomplete(L, status)) break;
    char *more = read_line(">> ");
    if (!more) break;
    lua_pushfstring(L, "\n%s", more);
    free(more);
    lua_concat(L, 2);
  }
  lua_remove(L, -2);
  return status;
}

static void print_results(lua_State *L) {
  int n = lua_gettop(L);
  if (n == 0) return;
  lua_getglobal(L, "print");
  lua_insert(L, 1);
  if (lua_pcall(L, n, 0, 0) != LUA_OK) cbc_report(L, LUA_ERRRUN);
}

/* ---- completion ---- */

/* Pushes the value the dotted path text[0..len) names (from the globals),
 * or nil; field reads that raise count as nil. */
static int get_path(lua_State *L) {
  size_t len;
  const char *text = lua_tolstring(L, 1, &len);
  lua_pushglobaltable(L);
  const char *start = text;
  for (const char *p = text;; p++) {
    if (p == text + len || *p == '.') {
      if (lua_type(L, -1) != LUA_TTABLE && lua_type(L, -1) != LUA_TUSERDATA) return 0;
      lua_pushlstring(L, start, (size_t)(p - start));
      lua_gettable(L, -2);
      if (p == text + len) return 1;
      start = p + 1;
    }
  }
}

/* Adds the string keys of the table at idx that start with prefix to the
 * list at list (as whole words: base .. sep .. key). */
static void add_keys(lua_State *L, int idx, int list, const char *base, char sep,
                     const char *prefix) {
  size_t plen = strlen(prefix);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING) continue;
    const char *key = lua_tostring(L, -1);
    if (strncmp(key, prefix, plen) != 0 || key[0] == '_') continue;
    if (*base) lua_pushfstring(L, "%s%c%s", base, sep, key);
    else lua_pushstring(L, key);
    lua_rawseti(L, list, (lua_Integer)lua_rawlen(L, list) + 1);
  }
}

/* The completions of text as a Lua list on the stack. */
static void candidates(lua_State *L, const char *text) {
  lua_newtable(L);
  int list = lua_gettop(L);
  const char *dot = strrchr(text, '.'), *colon = strrchr(text, ':');
  const char *sep = dot > colon ? dot : colon;
  if (!sep) {
    lua_pushglobaltable(L);
    add_keys(L, lua_gettop(L), list, "", 0, text);
    lua_pop(L, 1);
    return;
  }
  char base[512];
  snprintf(base, sizeof base, "%.*s", (int)(sep - text), text);
  lua_pushcfunction(L, get_path);
  lua_pushstring(L, base);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    lua_pop(L, 1);
    return;
  }
  int value = lua_gettop(L);
  if (lua_type(L, value) == LUA_TTABLE) add_keys(L, value, list, base, *sep, sep + 1);
  /* fields and methods from the metatable: __index tables, and the tensor
   * metatable's methods table */
  if (lua_getmetatable(L, value)) {
    int mt = lua_gettop(L);
    if (lua_getfield(L, mt, "methods") == LUA_TTABLE) add_keys(L, lua_gettop(L), list, base, *sep, sep + 1);
    lua_pop(L, 1);
    if (lua_getfield(L, mt, "__index") == LUA_TTABLE) add_keys(L, lua_gettop(L), list, base, *sep, sep + 1);
    lua_pop(L, 2);
  }
  lua_pop(L, 1);
}

static char *generate(const char *text, int state) {
  lua_State *L = completion_state;
  static int list_ref = LUA_NOREF, next;
  if (state == 0) {
    luaL_unref(L, LUA_REGISTRYINDEX, list_ref);
    candidates(L, text);
    list_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    next = 1;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, list_ref);
  lua_rawgeti(L, -1, next++);
  char *word = lua_isstring(L, -1) ? strdup(lua_tostring(L, -1)) : NULL;
  lua_pop(L, 2);
  return word;
}

static char **complete(const char *text, int start, int end) {
  (void)start;
  (void)end;
  rl_attempted_completion_over = 1; /* no file names */
  rl_completion_append_character = '\0';
  return rl_completion_matches(text, generate);
}

/* ---- the loop ---- */

static void history_path(char *buf, size_t size) {
  const char *home = getenv("HOME");
  snprintf(buf, size, "%s/.cbnet_history", home && *home ? home : ".");
}

void cbc_repl(lua_State *L) {
  char history[4096];
  bool tty = isatty(STDIN_FILENO);
  if (tty) {
    completion_state = L;
    rl_readline_name = "cbnet";
    rl_attempted_completion_function = complete;
    /* '.' and ':' stay inside a word, so cbnet.ze completes as a whole */
    rl_basic_word_break_characters = " \t\n\"'`><=;+-*/%^~#&|{}()[],";
    history_path(history, sizeof history);
    read_history(history);
  }
  for (char *line; (line = read_line("> "));) {
    lua_settop(L, 0);
    int status = compile(L, line);
    free(line);
    if (status == LUA_OK) status = cbc_protected_call(L, 0, LUA_MULTRET);
    if (status == LUA_OK) print_results(L);
    else cbc_report(L, status);
  }
  putchar('\n');
  if (tty) {
    write_history(history);
    history_truncate_file(history, HISTORY_LINES);
  }
}
