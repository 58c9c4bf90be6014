/* The cbnet command: runs experiment scripts with the cbnet modules
 * preloaded, an interactive prompt, and machine info. Modelled on lua.c. */
#include <limits.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "cbnet.h"
#include "command.h"

int luaopen_cbnet_core(lua_State *L);

#define EXIT_USAGE 2
#define EXIT_INTERRUPTED 130

static const char *const usage_text =
    "usage: cbnet run SCRIPT.lua [ARGS...]   run a script (ARGS in `arg` and `...`)\n"
    "       cbnet SCRIPT.lua [ARGS...]       the same\n"
    "       cbnet [-e CODE]... [-i] [SCRIPT [ARGS...]]\n"
    "                                        as lua5.4: run CODE, then SCRIPT, then (-i)\n"
    "                                        the prompt; cbnet and F are loaded\n"
    "       cbnet                            interactive prompt (line editing, history,\n"
    "                                        Tab completion, =expr)\n"
    "       cbnet info                       version, BLAS kernel, threads, CPU, paths\n"
    "       cbnet cache [list | clear]       the decoded-image cache: folders and sizes\n"
    "       cbnet version                    the version\n"
    "       cbnet --help                     this text\n"
    "Environment: CBNET_NUM_THREADS (threads, default: all cores), OPENBLAS_CORETYPE\n"
    "(OpenBLAS kernel; by default cbnet picks the best one the CPU supports).\n";

/* ---- Ctrl-C: as in lua.c, the signal handler installs a hook that raises
 * an error at the next Lua instruction, so a script stops cleanly (its
 * to-be-closed variables and pcall handlers run). ---- */

static lua_State *running_state;
static volatile sig_atomic_t interrupted;

static void interrupt_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  /* lets Lua code that catches errors tell this one from a failure */
  lua_pushboolean(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, "cbnet.interrupted");
  luaL_error(L, "interrupted");
}

static void on_sigint(int sig) {
  signal(sig, SIG_DFL); /* a second Ctrl-C kills the process */
  interrupted = 1;
  lua_sethook(running_state, interrupt_hook,
              LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT, 1);
}

static int traceback_handler(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* Calls the function below narg arguments with a traceback handler and
 * Ctrl-C handling. */
int cbc_interrupted(void) { return interrupted; }

int cbc_protected_call(lua_State *L, int narg, int nres) {
  int base = lua_gettop(L) - narg;
  lua_pushcfunction(L, traceback_handler);
  lua_insert(L, base);
  running_state = L;
  interrupted = 0;
  signal(SIGINT, on_sigint);
  int status = lua_pcall(L, narg, nres, base);
  signal(SIGINT, SIG_DFL);
  lua_remove(L, base);
  return status;
}

void cbc_report(lua_State *L, int status) {
  if (status == LUA_OK) return;
  const char *msg = lua_tostring(L, -1);
  fprintf(stderr, "cbnet: %s\n", msg ? msg : "(error object is not a string)");
  fflush(stderr);
  lua_pop(L, 1);
}

/* ---- module paths ---- */

/* The folder holding this executable. */
static int executable_dir(char *buf, size_t size) {
  ssize_t n = readlink("/proc/self/exe", buf, size - 1);
  if (n <= 0) return 0;
  buf[n] = '\0';
  char *slash = strrchr(buf, '/');
  if (!slash) return 0;
  *slash = '\0';
  return 1;
}

/* The folder of cbnet's Lua modules: the source tree's lua/ when the
 * command runs from a build folder inside it (build/bin, build/san/bin), or
 * the install prefix's (PREFIX/bin -> PREFIX/share/lua/5.4); the first that
 * holds cbnet/init.lua (or cbnet.lua, as LuaRocks installs it), as an
 * absolute path. */
static int find_modules(char *out, size_t size) {
  static const char *const candidates[] = {"../../lua", "../../../lua", "../share/lua/5.4"};
  char dir[PATH_MAX], path[PATH_MAX + 64];
  if (!executable_dir(dir, sizeof dir)) return 0;
  for (size_t i = 0; i < sizeof candidates / sizeof *candidates; i++) {
    snprintf(path, sizeof path, "%s/%s/cbnet/init.lua", dir, candidates[i]);
    if (access(path, R_OK) != 0) {
      snprintf(path, sizeof path, "%s/%s/cbnet.lua", dir, candidates[i]);
      if (access(path, R_OK) != 0) continue;
    }
    snprintf(path, sizeof path, "%s/%s", dir, candidates[i]);
    char resolved[PATH_MAX];
    if (!realpath(path, resolved)) continue;
    snprintf(out, size, "%s", resolved);
    return 1;
  }
  return 0;
}

/* Lua modules from find_modules (then LUA_PATH's); the C module is linked
 * in and preloaded. */
static void set_paths(lua_State *L) {
  char dir[PATH_MAX];
  luaL_Buffer b;
  lua_getglobal(L, "package");
  luaL_buffinit(L, &b);
  if (find_modules(dir, sizeof dir)) {
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;", dir, dir);
    luaL_addvalue(&b);
  }
  lua_getfield(L, -2, "path");
  luaL_addvalue(&b);
  luaL_pushresult(&b);
  lua_setfield(L, -2, "path");
  /* C modules besides the linked-in core (cbnet.mpi): the build's lib/ or
   * the prefix's lib/lua/5.4 */
  char exe[PATH_MAX];
  if (executable_dir(exe, sizeof exe)) {
    lua_getfield(L, -1, "cpath");
    lua_pushfstring(L, "%s/../lib/?.so;%s/../lib/lua/5.4/?.so;%s", exe, exe, lua_tostring(L, -1));
    lua_setfield(L, -3, "cpath");
    lua_pop(L, 1);
  }
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_cbnet_core);
  lua_setfield(L, -2, "cbnet.core");
  lua_pop(L, 2);
}

lua_State *cbc_new_state(void) {
  lua_State *L = luaL_newstate();
  if (!L) {
    fprintf(stderr, "cbnet: cannot create a Lua state (out of memory)\n");
    exit(EXIT_FAILURE);
  }
  luaL_openlibs(L);
  set_paths(L);
  return L;
}

/* ---- commands ---- */

/* arg = {[0] = script, args...}, arg[-1] = "cbnet", as lua.c does. */
static void set_arg_table(lua_State *L, char **argv, int script_index, int argc) {
  lua_createtable(L, argc - script_index - 1, script_index + 1);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script_index);
  }
  lua_setglobal(L, "arg");
}

static int cmd_run(int argc, char **argv, int script_index) {
  lua_State *L = cbc_new_state();
  set_arg_table(L, argv, script_index, argc);
  const char *script = argv[script_index];
  int status = luaL_loadfile(L, strcmp(script, "-") == 0 ? NULL : script);
  if (status == LUA_OK) {
    int nargs = argc - script_index - 1;
    luaL_checkstack(L, nargs, "too many arguments");
    for (int i = script_index + 1; i < argc; i++) lua_pushstring(L, argv[i]);
    status = cbc_protected_call(L, nargs, 0);
  }
  bool was_interrupted = interrupted;
  cbc_report(L, status);
  lua_close(L); /* runs finalizers and to-be-closed variables' __gc */
  if (status == LUA_OK) return EXIT_SUCCESS;
  return was_interrupted ? EXIT_INTERRUPTED : EXIT_FAILURE;
}

static const char *const info_script =
    "local cbnet = require 'cbnet'\n"
    "local i = cbnet.info()\n"
    "local cpu = {}\n"
    "for _, k in ipairs{'avx2', 'fma', 'avx512f', 'avx512bw', 'avx512dq', 'avx512vl',\n"
    "                   'avx512_bf16', 'amx_bf16'} do\n"
    "  if i.cpu[k] then cpu[#cpu + 1] = k end\n"
    "end\n"
    "local dir = ...\n"
    "print(('cbnet %s (%s)'):format(i.version, i.lua))\n"
    "print(('BLAS:    %s'):format(i.blas_config))\n"
    "print(('kernel:  %s (%s)'):format(i.blas_kernel, i.blas_kernel_source))\n"
    "if i.blas_kernel_from_user and i.blas_kernel_for_cpu\n"
    "   and i.blas_kernel:lower() ~= i.blas_kernel_for_cpu:lower() then\n"
    "  print(('note:    this CPU runs OpenBLAS\\'s %s kernel, which cbnet would choose; '\n"
    "    .. 'unset OPENBLAS_CORETYPE to use it'):format(i.blas_kernel_for_cpu))\n"
    "end\n"
    "print(('threads: %d (OpenBLAS: %d)'):format(i.threads, i.blas_threads))\n"
    "print(('conv:    %s (of %s; CBNET_CONV forces one)'):format(cbnet.conv_path(),\n"
    "  table.concat(cbnet.conv_paths(), ', ')))\n"
    "print(('CPU:     %s'):format(#cpu > 0 and table.concat(cpu, ' ') or 'no AVX2'))\n"
    "local init = package.searchpath('cbnet', package.path)\n"
    "print('modules: ' .. tostring(init))\n"
    "local modules = init and init:gsub('/cbnet/init%.lua$', '')\n"
    "local so = dir .. '/../lib'\n"
    "if not io.open(so .. '/cbnet/core.so') then so = dir .. '/../lib/lua/5.4' end\n"
    "print('from a plain lua5.4:')\n"
    "print(('  export LUA_PATH=\"%s/?.lua;%s/?/init.lua;;\"'):format(modules, modules))\n"
    "print(('  export LUA_CPATH=\"%s/?.so;;\"'):format(so))\n";

static const char *const cache_script =
    "local data = require 'cbnet.data'\n"
    "local _, what = ...\n"
    "if what == nil or what == 'list' then\n"
    "  local total, list = 0, data.cache_list()\n"
    "  print('decoded-image cache: ' .. tostring(data.cache_dir()))\n"
    "  for _, e in ipairs(list) do\n"
    "    print(('%9.1f MB  %s'):format(e.bytes / 1e6, e.source))\n"
    "    total = total + e.bytes\n"
    "  end\n"
    "  print(('%d folder(s), %.1f MB'):format(#list, total / 1e6))\n"
    "elseif what == 'clear' then\n"
    "  local n, bytes = data.cache_clear()\n"
    "  print(('removed %d file(s), %.1f MB'):format(n, bytes / 1e6))\n"
    "else\n"
    "  io.stderr:write('usage: cbnet cache [list | clear]\\n')\n"
    "  os.exit(2)\n"
    "end\n";

/* Runs code with the executable's folder and arg (or nil) as arguments. */
static int cmd_script(const char *code, const char *chunkname, const char *arg) {
  lua_State *L = cbc_new_state();
  char dir[PATH_MAX] = ".";
  executable_dir(dir, sizeof dir);
  int status = luaL_loadbuffer(L, code, strlen(code), chunkname);
  if (status == LUA_OK) {
    lua_pushstring(L, dir);
    lua_pushstring(L, arg);
    status = cbc_protected_call(L, 2, 0);
  }
  cbc_report(L, status);
  lua_close(L);
  return status == LUA_OK ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* ---- lua5.4's command line: [-e CODE]... [-i] [SCRIPT [ARGS...]] ---- */

static int usage_error(const char *what, const char *arg) {
  fprintf(stderr, "cbnet: %s '%s'\n%s", what, arg, usage_text);
  return EXIT_USAGE;
}

/* Runs -e chunks, then the script (if any), then the prompt (with -i, or
 * when there is nothing else), all in one state. */
static int cmd_lua(int argc, char **argv, int first) {
  bool interactive = false;
  int script = 0, nexec = 0;
  for (int i = first; i < argc && !script; i++) {
    if (strcmp(argv[i], "-e") == 0) {
      if (++i >= argc) return usage_error("-e needs code to run", "-e");
      nexec++;
    } else if (strcmp(argv[i], "-i") == 0) {
      interactive = true;
    } else if (strcmp(argv[i], "--") == 0) {
      script = i + 1 < argc ? i + 1 : 0;
      break;
    } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
      return usage_error("unknown option", argv[i]);
    } else {
      script = i;
    }
  }
  lua_State *L = cbc_new_state();
  set_arg_table(L, argv, script ? script : argc - 1, argc);
  int status = luaL_dostring(L, "cbnet = require 'cbnet'; F = cbnet.F");
  for (int i = first; status == LUA_OK && i < (script ? script : argc); i++) {
    if (strcmp(argv[i], "-e") != 0) continue;
    status = luaL_loadbuffer(L, argv[i + 1], strlen(argv[i + 1]), "=(command line)");
    if (status == LUA_OK) status = cbc_protected_call(L, 0, 0);
    i++;
  }
  if (status == LUA_OK && script) {
    status = luaL_loadfile(L, strcmp(argv[script], "-") == 0 ? NULL : argv[script]);
    if (status == LUA_OK) {
      int nargs = argc - script - 1;
      luaL_checkstack(L, nargs, "too many arguments");
      for (int i = script + 1; i < argc; i++) lua_pushstring(L, argv[i]);
      status = cbc_protected_call(L, nargs, 0);
    }
  }
  bool was_interrupted = cbc_interrupted();
  cbc_report(L, status);
  if (status == LUA_OK && (interactive || (!script && nexec == 0))) {
    if (interactive || isatty(STDIN_FILENO))
      printf("cbnet %s (%s) -- cbnet and F are loaded; Ctrl-D exits\n", CBNET_VERSION, LUA_RELEASE);
    cbc_repl(L);
  }
  lua_close(L);
  if (status == LUA_OK) return EXIT_SUCCESS;
  return was_interrupted ? EXIT_INTERRUPTED : EXIT_FAILURE;
}

/* A first argument that is a script rather than a command: an existing
 * file, or a name ending in .lua. */
static bool is_script(const char *arg) {
  size_t n = strlen(arg);
  return access(arg, F_OK) == 0 || (n > 4 && strcmp(arg + n - 4, ".lua") == 0);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    if (isatty(STDIN_FILENO)) return cmd_lua(argc, argv, 1);
    char *stdin_script[] = {argv[0], "-", NULL}; /* `cbnet < script.lua` */
    return cmd_run(2, stdin_script, 1);
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "run") == 0) {
    if (argc < 3) {
      fprintf(stderr, "cbnet run: missing SCRIPT\n%s", usage_text);
      return EXIT_USAGE;
    }
    return cmd_run(argc, argv, 2);
  }
  if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0 || strcmp(cmd, "-v") == 0) {
    printf("cbnet %s\n", CBNET_VERSION);
    return EXIT_SUCCESS;
  }
  if (strcmp(cmd, "info") == 0) return cmd_script(info_script, "=info", NULL);
  if (strcmp(cmd, "cache") == 0) return cmd_script(cache_script, "=cache", argc > 2 ? argv[2] : NULL);
  if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
    fputs(usage_text, stdout);
    return EXIT_SUCCESS;
  }
  if (cmd[0] == '-' || is_script(cmd)) return cmd_lua(argc, argv, 1);
  return usage_error("unknown command (and no such script)", cmd);
}
