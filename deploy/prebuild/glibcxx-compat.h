// Force-included (-include) into every addon source by scripts/prebuild.sh, never by source
// builds. GCC 12's libstdc++ gives std::condition_variable::wait a new symbol version
// (GLIBCXX_3.4.30); binding the reference to the older, still exported GLIBCXX_3.4.11 entry
// (same ABI, same behaviour) lets the prebuilt addon load with GCC 11's libstdc++ (Amazon
// Linux 2023, RHEL 9). scripts/prebuild.sh prints the versions the result still needs.
#pragma once
#ifdef __cplusplus
#include <cstddef>  // defines __GLIBCXX__ when the library is libstdc++
#endif
#if defined(__cplusplus) && defined(__GLIBCXX__) && defined(__linux__)
__asm__(".symver _ZNSt18condition_variable4waitERSt11unique_lockISt5mutexE,"
        "_ZNSt18condition_variable4waitERSt11unique_lockISt5mutexE@GLIBCXX_3.4.11");
#endif
