# Runs one libFuzzer binary for SECONDS (cmake -P, from ctest -L fuzz). The
# seeds and saved crashes are copied into WORK first and the fuzzer writes
# only there, so the source tree is never modified. Any crash, leak, timeout
# or out-of-memory fails the test and names the input that caused it.
#
# -D FUZZER= NAME= WORK= CORPUS= REGRESSIONS= SECONDS= [DICT=] [MAX_LEN=]
foreach(var FUZZER NAME WORK CORPUS REGRESSIONS SECONDS)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "run_fuzzer.cmake: -D${var}= is required")
  endif()
endforeach()

file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}/corpus" "${WORK}/artifacts")
file(GLOB seeds LIST_DIRECTORIES false "${CORPUS}/*" "${REGRESSIONS}/*")
if(seeds)
  file(COPY ${seeds} DESTINATION "${WORK}/corpus")
endif()

set(args -max_total_time=${SECONDS} -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
  -artifact_prefix=${WORK}/artifacts/)
if(DICT)
  list(APPEND args -dict=${DICT})
endif()
if(MAX_LEN)
  list(APPEND args -max_len=${MAX_LEN})
endif()
list(LENGTH seeds nseeds)
message(STATUS "fuzz_${NAME}: ${SECONDS} s from ${nseeds} seeds: ${FUZZER} ${args} ${WORK}/corpus")
execute_process(COMMAND "${FUZZER}" ${args} "${WORK}/corpus"
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE log)
file(WRITE "${WORK}/fuzz.log" "${out}${log}")

# libFuzzer's last status line ("#N DONE cov: .. ft: .. corp: ..") and its
# final stats make the summary.
string(REGEX MATCHALL "#[0-9]+[ \t]+DONE[^\n]*|stat::[^\n]*|Done [0-9]+ runs[^\n]*" summary "${log}")
string(REPLACE ";" "\n" summary "${summary}")
file(WRITE "${WORK}/summary.txt" "fuzz_${NAME}:\n${summary}\n")
message("${summary}")

if(NOT rc EQUAL 0)
  # The report: the end of the log holds the stack and the input's name.
  string(LENGTH "${log}" len)
  if(len GREATER 12000)
    math(EXPR start "${len} - 12000")
    string(SUBSTRING "${log}" ${start} -1 log)
  endif()
  file(GLOB crashes "${WORK}/artifacts/*")
  message("${log}")
  message(FATAL_ERROR "fuzz_${NAME} failed (exit ${rc}). Inputs: ${crashes}\n"
    "Full log: ${WORK}/fuzz.log. Reproduce with ${FUZZER} <input>; once understood, "
    "keep the input as a test: copy it to tests/fuzz/regressions/${NAME}/.")
endif()
