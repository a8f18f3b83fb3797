/* placeholder */ typedef int wmd_placeholder_t;
